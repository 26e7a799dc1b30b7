package org.editmobile.demo;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;

/**
 * CLIP's tokenizer: byte-pair encoding (tokenizer.json "model": {"type": "BPE", "vocab": {token:
 * id}, "merges": [[a, b], ...], "end_of_word_suffix": "</w>", ...}). A word starts as its
 * characters, the last one carrying the end-of-word suffix; a character not in the vocabulary
 * becomes the unknown token. Then adjacent pairs are merged, the pair of lowest merge rank first
 * (leftmost among equals), until no listed pair is left, as Hugging Face tokenizers does it.
 */
public final class BpeTokenizer extends TextTokenizer {
  private final Map<String, Integer> vocab;
  /** (left id, right id) as one long -> {rank, merged id}. */
  private final Map<Long, int[]> merges = new HashMap<>();
  private final String prefix;
  private final String suffix;
  private final Integer unkId;
  private final boolean fuseUnk;
  private final boolean ignoreMerges;

  BpeTokenizer(ConfigFile json, ConfigFile config, ConfigFile model) {
    this(json, config, model, readVocab(model));
  }

  private BpeTokenizer(
      ConfigFile json, ConfigFile config, ConfigFile model, Map<String, Integer> vocab) {
    super(json, config, vocab);
    model.refuseUnless("dropout", null, "no random merges", null, 0.0);
    model.refuseUnless("byte_fallback", false, "unknown characters become the unk token", false);
    this.vocab = vocab;
    prefix = model.string("continuing_subword_prefix", "");
    suffix = model.string("end_of_word_suffix", "");
    String unk = model.string("unk_token", null);
    unkId = unk == null ? null : vocab.get(unk);
    if (unk != null && unkId == null) {
      throw new DemoException(model.name + " unk_token " + unk + " is not in the vocabulary");
    }
    fuseUnk = model.bool("fuse_unk", false);
    ignoreMerges = model.bool("ignore_merges", false);
    readMerges(model);
  }

  private static Map<String, Integer> readVocab(ConfigFile model) {
    ConfigFile entries = model.object("vocab");
    Map<String, Integer> vocab = new HashMap<>();
    for (String token : entries.keys()) {
      vocab.put(token, entries.nonNegativeInt(entries.raw(token), token));
    }
    return vocab;
  }

  /** Merges as ["a", "b"] pairs or "a b" strings; a later duplicate pair wins. */
  private void readMerges(ConfigFile model) {
    int rank = 0;
    for (Object item : model.list("merges")) {
      String[] pair = mergePair(item);
      if (pair == null) {
        throw new DemoException(model.name + " merges[" + rank + "] must be a pair, got " + item);
      }
      Integer leftId = vocab.get(pair[0]);
      Integer rightId = vocab.get(pair[1]);
      String right = pair[1].substring(Math.min(prefix.length(), pair[1].length()));
      Integer merged = vocab.get(pair[0] + right); // the prefix dropped from the right part
      if (leftId == null || rightId == null || merged == null) {
        throw new DemoException(model.name + " merges[" + rank + "] " + pair[0] + " " + pair[1]
            + " names a token not in the vocabulary");
      }
      merges.put(key(leftId, rightId), new int[] {rank++, merged});
    }
  }

  private static String[] mergePair(Object item) {
    if (item instanceof String) {
      String[] parts = ((String) item).split(" ", -1);
      return parts.length == 2 ? parts : null;
    }
    if (item instanceof List && ((List<?>) item).size() == 2) {
      Object a = ((List<?>) item).get(0);
      Object b = ((List<?>) item).get(1);
      boolean strings = a instanceof String && b instanceof String;
      return strings ? new String[] {(String) a, (String) b} : null;
    }
    return null;
  }

  private static long key(int left, int right) {
    return ((long) left << 32) | (right & 0xFFFFFFFFL);
  }

  @Override
  protected void tokenizeWord(String word, List<Integer> out) {
    if (ignoreMerges && vocab.containsKey(word)) {
      out.add(vocab.get(word));
      return;
    }
    List<Integer> symbols = initialSymbols(word);
    mergeAll(symbols);
    for (int id : symbols) {
      if (id >= 0) {
        out.add(id);
      }
    }
  }

  /** One symbol per character (prefix on all but the first, suffix on the last), unk fused. */
  private List<Integer> initialSymbols(String word) {
    List<Integer> symbols = new ArrayList<>();
    boolean lastWasUnk = false;
    for (int i = 0; i < word.length(); ) {
      int end = word.offsetByCodePoints(i, 1);
      String symbol =
          (i > 0 ? prefix : "") + word.substring(i, end) + (end == word.length() ? suffix : "");
      Integer id = vocab.get(symbol);
      if (id != null) {
        symbols.add(id);
        lastWasUnk = false;
      } else if (unkId != null) {
        if (!(fuseUnk && lastWasUnk)) {
          symbols.add(unkId);
        }
        lastWasUnk = true;
      } // no unk token: the character is dropped, as the library does
      i = end;
    }
    return symbols;
  }

  /** A merge waiting in the queue: lowest rank first, then leftmost. */
  private static final class Merge implements Comparable<Merge> {
    final int pos;
    final int rank;
    final int merged;

    Merge(int pos, int rank, int merged) {
      this.pos = pos;
      this.rank = rank;
      this.merged = merged;
    }

    @Override
    public int compareTo(Merge other) {
      return rank != other.rank
          ? Integer.compare(rank, other.rank)
          : Integer.compare(pos, other.pos);
    }
  }

  /**
   * Merges in place, as the library's Word::merge_all: symbols are a linked list over their
   * first positions; merged-away ones become -1. A queued merge whose pair has changed since is
   * skipped.
   */
  private void mergeAll(List<Integer> symbols) {
    int n = symbols.size();
    int[] next = new int[n];
    int[] prev = new int[n];
    for (int i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    PriorityQueue<Merge> queue = new PriorityQueue<>();
    for (int i = 0; i + 1 < n; i++) {
      offer(queue, symbols, i, i + 1);
    }
    while (!queue.isEmpty()) {
      Merge top = queue.poll();
      int left = top.pos;
      int right = symbols.get(left) < 0 ? -1 : next[left];
      if (right < 0) {
        continue;
      }
      int[] current = merges.get(key(symbols.get(left), symbols.get(right)));
      if (current == null || current[1] != top.merged) {
        continue; // stale: the pair at this position changed after it was queued
      }
      symbols.set(left, top.merged);
      symbols.set(right, -1);
      next[left] = next[right];
      if (next[right] >= 0) {
        prev[next[right]] = left;
      }
      if (prev[left] >= 0) {
        offer(queue, symbols, prev[left], left);
      }
      if (next[left] >= 0) {
        offer(queue, symbols, left, next[left]);
      }
    }
  }

  private void offer(PriorityQueue<Merge> queue, List<Integer> symbols, int left, int right) {
    int[] merge = merges.get(key(symbols.get(left), symbols.get(right)));
    if (merge != null) {
      queue.add(new Merge(left, merge[0], merge[1]));
    }
  }
}
