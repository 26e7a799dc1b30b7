package org.editmobile.demo;

import java.util.ArrayList;
import java.util.List;

/**
 * The two word regexes of CLIP tokenizers, as hand-written scanners that find the same
 * matches as the Oniguruma regexes of Hugging Face tokenizers (alternatives tried in order at
 * the leftmost position, each greedy):
 *
 * <ul>
 *   <li>CLIP's Split pattern {@link PreTokenizer#CLIP_PATTERN}, matches kept, the rest dropped;
 *   <li>GPT-2's ByteLevel pattern {@code 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
 *       ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+}, which covers the whole text.
 * </ul>
 */
final class RegexWords {
  private RegexWords() {}

  private static final String[] CLIP_LITERALS = {
    "<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"
  };
  private static final String[] CONTRACTIONS = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};

  static List<String> clip(String text) {
    List<String> words = new ArrayList<>();
    int i = 0;
    while (i < text.length()) {
      int end = clipMatchEnd(text, i);
      if (end > i) {
        words.add(text.substring(i, end));
        i = end;
      } else {
        i += Character.charCount(text.codePointAt(i)); // white space: removed
      }
    }
    return words;
  }

  /** End of CLIP's pattern matched at i, or i when nothing matches there. */
  private static int clipMatchEnd(String text, int i) {
    for (String literal : CLIP_LITERALS) {
      if (text.startsWith(literal, i)) {
        return i + literal.length();
      }
    }
    int c = text.codePointAt(i);
    if (UnicodeClasses.isLetter(c)) {
      return runEnd(text, i, Kind.LETTER);
    }
    if (UnicodeClasses.isNumber(c)) {
      return i + Character.charCount(c); // [\p{N}]: one digit at a time
    }
    if (UnicodeClasses.isOther(c)) {
      return runEnd(text, i, Kind.OTHER);
    }
    return i;
  }

  static List<String> gpt2(String text) {
    List<String> words = new ArrayList<>();
    int i = 0;
    while (i < text.length()) {
      int end = gpt2MatchEnd(text, i);
      words.add(text.substring(i, end));
      i = end;
    }
    return words;
  }

  private static int gpt2MatchEnd(String text, int i) {
    for (String contraction : CONTRACTIONS) {
      if (text.startsWith(contraction, i)) {
        return i + contraction.length();
      }
    }
    int c = text.codePointAt(i);
    int afterSpace = c == ' ' && i + 1 < text.length() ? i + 1 : -1;
    for (Kind kind : new Kind[] {Kind.LETTER, Kind.NUMBER, Kind.OTHER}) {
      if (kind.has(c)) {
        return runEnd(text, i, kind); // " ?X+" without its space
      }
      if (afterSpace > 0 && kind.has(text.codePointAt(afterSpace))) {
        return runEnd(text, afterSpace, kind); // " ?X+" with it
      }
    }
    // White space: \s+(?!\S) leaves the last one to start the next word, unless the run ends
    // the text or is a single character (then \s+ takes it).
    int end = runEnd(text, i, Kind.SPACE);
    if (end == text.length()) {
      return end;
    }
    int last = text.offsetByCodePoints(end, -1);
    return last > i ? last : end;
  }

  private enum Kind {
    LETTER,
    NUMBER,
    OTHER,
    SPACE;

    boolean has(int c) {
      switch (this) {
        case LETTER:
          return UnicodeClasses.isLetter(c);
        case NUMBER:
          return UnicodeClasses.isNumber(c);
        case OTHER:
          return UnicodeClasses.isOther(c);
        default:
          return UnicodeClasses.isWhiteSpace(c);
      }
    }
  }

  private static int runEnd(String text, int i, Kind kind) {
    while (i < text.length() && kind.has(text.codePointAt(i))) {
      i += Character.charCount(text.codePointAt(i));
    }
    return i;
  }
}
