package org.editmobile.demo;

import java.nio.charset.StandardCharsets;
import java.text.BreakIterator;
import java.util.Base64;
import java.util.Locale;

/**
 * The "Precompiled" normalizer of T5 tokenizer.json files: SentencePiece's precompiled_charsmap
 * (its NFKC-like rules), read as Hugging Face tokenizers reads it. The blob is a little-endian
 * u32 trie size, a double-array trie over UTF-8 bytes (u32 units), then the replacement
 * strings, each ending in a NUL byte. Each grapheme cluster shorter than 6 UTF-8 bytes is
 * replaced whole when a rule matches a prefix of it (the shortest such rule, as the library
 * does); otherwise each character is looked up alone.
 *
 * <p>Grapheme clusters come from java.text.BreakIterator: on Android (ICU) these are Unicode's
 * extended grapheme clusters, as in the library; desktop JDKs before 20 use older rules that
 * agree on letters with combining marks, CJK and Hangul, not on every emoji sequence.
 */
final class SentencePieceCharsmap extends TextNormalizer {
  private final long[] trie;
  private final byte[] replacements;

  private SentencePieceCharsmap(long[] trie, byte[] replacements) {
    this.trie = trie;
    this.replacements = replacements;
  }

  static SentencePieceCharsmap fromJson(ConfigFile spec) {
    byte[] blob;
    try {
      blob = Base64.getDecoder().decode(spec.string("precompiled_charsmap"));
    } catch (IllegalArgumentException err) {
      throw new DemoException(
          spec.name + " precompiled_charsmap is not base64: " + err.getMessage());
    }
    long trieBytes = blob.length < 4 ? -1 : u32(blob, 0);
    if (trieBytes < 4 || trieBytes % 4 != 0 || trieBytes > blob.length - 4) {
      throw new DemoException(spec.name + " precompiled_charsmap is damaged (trie size "
          + trieBytes + " in " + blob.length + " bytes); take the tokenizer folder again");
    }
    long[] trie = new long[(int) (trieBytes / 4)];
    for (int i = 0; i < trie.length; i++) {
      trie[i] = u32(blob, 4 + 4 * i);
    }
    byte[] replacements = new byte[blob.length - 4 - (int) trieBytes];
    System.arraycopy(blob, 4 + (int) trieBytes, replacements, 0, replacements.length);
    return new SentencePieceCharsmap(trie, replacements);
  }

  @Override
  String apply(String text) {
    StringBuilder out = new StringBuilder(text.length());
    BreakIterator graphemes = BreakIterator.getCharacterInstance(Locale.ROOT);
    graphemes.setText(text);
    int start = graphemes.first();
    for (int end = graphemes.next(); end != BreakIterator.DONE; end = graphemes.next()) {
      appendNormalized(text.substring(start, end), out);
      start = end;
    }
    return out.toString();
  }

  /** A grapheme under 6 UTF-8 bytes replaced whole if a rule matches, else char by char. */
  private void appendNormalized(String grapheme, StringBuilder out) {
    String whole = utf8Length(grapheme) < 6 ? transform(grapheme) : null;
    if (whole != null) {
      out.append(whole);
      return;
    }
    for (int i = 0; i < grapheme.length(); ) {
      String one = new String(Character.toChars(grapheme.codePointAt(i)));
      String replaced = transform(one);
      out.append(replaced != null ? replaced : one);
      i += one.length();
    }
  }

  /** The replacement of the shortest rule matching a prefix of chunk, or null. */
  private String transform(String chunk) {
    byte[] key = chunk.getBytes(StandardCharsets.UTF_8);
    int node = (int) offset(unit(0));
    for (byte b : key) {
      int c = b & 0xFF;
      if (c == 0) {
        return null;
      }
      node ^= c;
      long unit = unit(node);
      if ((unit & ((1L << 31) | 0xFF)) != c) {
        return null;
      }
      node ^= (int) offset(unit);
      if (((unit >> 8) & 1) == 1) {
        return replacementAt((int) (unit(node) & ((1L << 31) - 1)));
      }
    }
    return null;
  }

  private long unit(int index) {
    if (index < 0 || index >= trie.length) {
      throw new DemoException("tokenizer.json precompiled_charsmap is damaged (trie index "
          + index + " of " + trie.length + "); take the tokenizer folder again");
    }
    return trie[index];
  }

  private static long offset(long unit) {
    return (unit >> 10) << ((unit & (1L << 9)) >> 6);
  }

  private String replacementAt(int index) {
    if (index > replacements.length) {
      throw new DemoException("tokenizer.json precompiled_charsmap is damaged (replacement at "
          + index + " of " + replacements.length + " bytes)");
    }
    int end = index;
    while (end < replacements.length && replacements[end] != 0) {
      end++;
    }
    return new String(replacements, index, end - index, StandardCharsets.UTF_8);
  }

  private static int utf8Length(String text) {
    return text.getBytes(StandardCharsets.UTF_8).length;
  }

  private static long u32(byte[] blob, int at) {
    return (blob[at] & 0xFFL)
        | (blob[at + 1] & 0xFFL) << 8
        | (blob[at + 2] & 0xFFL) << 16
        | (blob[at + 3] & 0xFFL) << 24;
  }
}
