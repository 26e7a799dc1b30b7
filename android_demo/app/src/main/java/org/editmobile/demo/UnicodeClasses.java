package org.editmobile.demo;

/**
 * The character classes of the regexes in tokenizer.json files (Oniguruma, Unicode mode):
 * \s is the White_Space property, \p{L} any letter, \p{N} any number. Written out rather than
 * left to java.util.regex, whose \s is ASCII-only unless a flag Android does not honour is set.
 * Letters and numbers follow the Unicode version of the Java runtime, which may be older than
 * the tokenizers library's for characters added recently.
 */
final class UnicodeClasses {
  private UnicodeClasses() {}

  /** Unicode White_Space: also Rust's char::is_whitespace (WhitespaceSplit). */
  static boolean isWhiteSpace(int c) {
    return (c >= 0x09 && c <= 0x0D)
        || c == 0x20
        || c == 0x85
        || c == 0xA0
        || c == 0x1680
        || (c >= 0x2000 && c <= 0x200A)
        || c == 0x2028
        || c == 0x2029
        || c == 0x202F
        || c == 0x205F
        || c == 0x3000;
  }

  /** \p{L}: general categories Lu, Ll, Lt, Lm, Lo. */
  static boolean isLetter(int c) {
    return Character.isLetter(c);
  }

  /** \p{N}: general categories Nd, Nl, No. */
  static boolean isNumber(int c) {
    int type = Character.getType(c);
    return type == Character.DECIMAL_DIGIT_NUMBER
        || type == Character.LETTER_NUMBER
        || type == Character.OTHER_NUMBER;
  }

  /** [^\s\p{L}\p{N}]: punctuation, symbols, marks, controls... */
  static boolean isOther(int c) {
    return !isWhiteSpace(c) && !isLetter(c) && !isNumber(c);
  }
}
