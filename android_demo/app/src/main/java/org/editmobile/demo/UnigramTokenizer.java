package org.editmobile.demo;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * T5's tokenizer: a SentencePiece Unigram model (tokenizer.json "model": {"type": "Unigram",
 * "vocab": [[piece, score], ...], "unk_id": ...}). Each word is cut into the vocabulary pieces
 * whose scores sum highest (Viterbi); a character no piece covers becomes the unknown token,
 * scored 10 below the lowest piece, and neighbouring unknown characters are fused into one.
 * Ties go as in Hugging Face tokenizers: the first candidate found (earliest start) is kept.
 */
public final class UnigramTokenizer extends TextTokenizer {
  /** SentencePiece's penalty under the lowest score for an unknown character. */
  private static final double UNK_PENALTY = 10.0;

  private final Map<String, Integer> ids;
  private final double[] scores;
  private final int unkId;
  private final double unkScore;
  private final int longestPiece;

  UnigramTokenizer(ConfigFile json, ConfigFile config, ConfigFile model) {
    this(json, config, model, Vocab.read(model));
  }

  private UnigramTokenizer(ConfigFile json, ConfigFile config, ConfigFile model, Vocab vocab) {
    super(json, config, vocab.ids);
    model.refuseUnless("byte_fallback", false, "unknown characters become <unk>", false);
    ids = vocab.ids;
    scores = vocab.scores;
    unkId = model.has("unk_id") ? model.nonNegativeInt(model.raw("unk_id"), "unk_id") : -1;
    if (unkId >= scores.length) {
      throw new DemoException(model.name + " unk_id " + unkId + " is past the vocabulary");
    }
    unkScore = vocab.minScore - UNK_PENALTY;
    longestPiece = vocab.longestPiece;
  }

  /** The vocabulary: a later duplicate piece wins, as in a HashMap built in order. */
  private static final class Vocab {
    final Map<String, Integer> ids = new HashMap<>();
    final double[] scores;
    double minScore = Double.POSITIVE_INFINITY;
    int longestPiece;

    private Vocab(int size) {
      scores = new double[size];
    }

    static Vocab read(ConfigFile model) {
      List<Object> entries = model.list("vocab");
      if (entries.isEmpty()) {
        throw new DemoException(model.name + " vocab is empty");
      }
      Vocab vocab = new Vocab(entries.size());
      for (int id = 0; id < entries.size(); id++) {
        Object entry = entries.get(id);
        if (!(entry instanceof List) || ((List<?>) entry).size() != 2
            || !(((List<?>) entry).get(0) instanceof String)
            || !(((List<?>) entry).get(1) instanceof Double)) {
          throw new DemoException(model.name + " vocab[" + id + "] must be [piece, score], got "
              + entry);
        }
        String piece = (String) ((List<?>) entry).get(0);
        vocab.ids.put(piece, id);
        vocab.scores[id] = (Double) ((List<?>) entry).get(1);
        vocab.minScore = Math.min(vocab.minScore, vocab.scores[id]);
        vocab.longestPiece = Math.max(vocab.longestPiece, piece.length());
      }
      return vocab;
    }
  }

  /**
   * For each prefix word[0, end) of a word (end at code point boundaries): the highest score of a
   * segmentation, where its last piece starts, and that piece's id.
   */
  private static final class Lattice {
    final double[] best;
    final int[] from;
    final int[] pieceId;

    Lattice(int length) {
      best = new double[length + 1];
      from = new int[length + 1];
      pieceId = new int[length + 1];
      Arrays.fill(from, -1);
    }

    /** Keeps the candidate when it is the first to reach end, or strictly better. */
    void offer(int start, int end, int id, double score) {
      double total = best[start] + score;
      if (from[end] < 0 || total > best[end]) {
        best[end] = total;
        from[end] = start;
        pieceId[end] = id;
      }
    }
  }

  @Override
  protected void tokenizeWord(String word, List<Integer> out) {
    Lattice lattice = new Lattice(word.length());
    for (int start = 0; start < word.length(); start = word.offsetByCodePoints(start, 1)) {
      if (!offerPieces(word, start, lattice)) {
        int charEnd = word.offsetByCodePoints(start, 1);
        if (unkId < 0) {
          throw new DemoException("tokenizer.json has no unk_id and the prompt has a character "
              + "no piece covers: " + word.substring(start, charEnd));
        }
        lattice.offer(start, charEnd, unkId, unkScore);
      }
    }
    appendPath(word, lattice, out);
  }

  /** Offers every piece starting at start, shortest first; true if one is a single character. */
  private boolean offerPieces(String word, int start, Lattice lattice) {
    int charEnd = word.offsetByCodePoints(start, 1);
    int last = Math.min(word.length(), start + longestPiece);
    boolean coversOneChar = false;
    for (int end = charEnd; end <= last; end = nextBoundary(word, end)) {
      Integer id = ids.get(word.substring(start, end));
      if (id != null) {
        lattice.offer(start, end, id, scores[id]);
        coversOneChar |= end == charEnd;
      }
    }
    return coversOneChar;
  }

  private static int nextBoundary(String word, int end) {
    return end < word.length() ? word.offsetByCodePoints(end, 1) : end + 1;
  }

  /** Walks the best path back; runs of unknown pieces are fused and looked up as one string. */
  private void appendPath(String word, Lattice lattice, List<Integer> out) {
    List<String> pieces = new ArrayList<>();
    List<Boolean> unknown = new ArrayList<>();
    for (int end = word.length(); end > 0; end = lattice.from[end]) {
      pieces.add(0, word.substring(lattice.from[end], end));
      unknown.add(0, lattice.pieceId[end] == unkId);
    }
    for (int i = 0; i < pieces.size(); i++) {
      StringBuilder piece = new StringBuilder(pieces.get(i));
      while (unknown.get(i) && i + 1 < pieces.size() && unknown.get(i + 1)) {
        piece.append(pieces.get(++i));
      }
      Integer id = ids.get(piece.toString());
      out.add(id != null ? id : unkId);
    }
  }
}
