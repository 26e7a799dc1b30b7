package org.editmobile.demo;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.List;

/**
 * The "normalizer" of a tokenizer.json, the subset real T5 and CLIP tokenizers use: NFC / NFKC,
 * Lowercase, Strip, Replace (a string, or the regexes \s+ and " {2,}"), SentencePiece's
 * Precompiled charsmap, and Sequence of these. Any other type or regex is refused, naming it:
 * a tokenizer that differs silently would feed the text encoder other ids than the model was
 * trained on.
 */
abstract class TextNormalizer {
  abstract String apply(String text);

  static final TextNormalizer NONE =
      new TextNormalizer() {
        @Override
        String apply(String text) {
          return text;
        }
      };

  static TextNormalizer fromJson(ConfigFile json, String key) {
    return json.has(key) ? of(json.object(key)) : NONE;
  }

  private static TextNormalizer of(ConfigFile spec) {
    String type = spec.string("type");
    switch (type) {
      case "Sequence":
        return sequence(spec);
      case "NFC":
        return unicode(Normalizer.Form.NFC);
      case "NFKC":
        return unicode(Normalizer.Form.NFKC);
      case "Lowercase":
        return LOWERCASE;
      case "Strip":
        return strip(spec.bool("strip_left", true), spec.bool("strip_right", true));
      case "Replace":
        return replace(spec);
      case "Precompiled":
        return SentencePieceCharsmap.fromJson(spec);
      default:
        throw new DemoException(
            spec.name + " type " + type + " is not implemented by this app (it implements "
                + "Sequence, NFC, NFKC, Lowercase, Strip, Replace, Precompiled)");
    }
  }

  private static TextNormalizer sequence(ConfigFile spec) {
    final List<TextNormalizer> steps = new ArrayList<>();
    int index = 0;
    for (Object item : spec.list("normalizers")) {
      steps.add(of(spec.item(item, "normalizers[" + index++ + "]")));
    }
    return new TextNormalizer() {
      @Override
      String apply(String text) {
        for (TextNormalizer step : steps) {
          text = step.apply(text);
        }
        return text;
      }
    };
  }

  private static TextNormalizer unicode(final Normalizer.Form form) {
    return new TextNormalizer() {
      @Override
      String apply(String text) {
        return Normalizer.normalize(text, form);
      }
    };
  }

  /**
   * Character by character, as Rust's char::to_lowercase: no final-sigma rule (String's
   * toLowerCase has one), and U+0130 to "i" + U+0307, its one multi-character mapping.
   */
  static final TextNormalizer LOWERCASE =
      new TextNormalizer() {
        @Override
        String apply(String text) {
          StringBuilder out = new StringBuilder(text.length());
          for (int i = 0; i < text.length(); ) {
            int c = text.codePointAt(i);
            i += Character.charCount(c);
            if (c == 0x130) {
              out.append("i\u0307");
            } else {
              out.appendCodePoint(Character.toLowerCase(c));
            }
          }
          return out.toString();
        }
      };

  private static TextNormalizer strip(final boolean left, final boolean right) {
    return new TextNormalizer() {
      @Override
      String apply(String text) {
        int start = 0;
        int end = text.length();
        while (left && start < end && UnicodeClasses.isWhiteSpace(text.codePointAt(start))) {
          start += Character.charCount(text.codePointAt(start));
        }
        while (right && end > start && UnicodeClasses.isWhiteSpace(text.codePointBefore(end))) {
          end -= Character.charCount(text.codePointBefore(end));
        }
        return text.substring(start, end);
      }
    };
  }

  /** Replace: a literal string, or one of the two regexes CLIP and T5 tokenizers use. */
  private static TextNormalizer replace(ConfigFile spec) {
    ConfigFile pattern = spec.object("pattern");
    final String content = spec.string("content");
    if (pattern.has("String")) {
      final String literal = pattern.string("String");
      if (literal.isEmpty()) {
        throw new DemoException(spec.name + " replaces an empty string");
      }
      return new TextNormalizer() {
        @Override
        String apply(String text) {
          return text.replace(literal, content);
        }
      };
    }
    String regex = pattern.string("Regex");
    if (regex.equals("\\s+")) {
      return runs(content, 1, true);
    }
    if (regex.equals(" {2,}")) {
      return runs(content, 2, false);
    }
    throw new DemoException(
        spec.name + " regex " + regex + " is not implemented by this app (it implements \\s+ and"
            + " \" {2,}\")");
  }

  /**
   * Each run of at least {@code min} white-space characters (Unicode White_Space, as \s in the
   * Oniguruma regexes of tokenizers) or of spaces becomes {@code content}.
   */
  private static TextNormalizer runs(final String content, final int min, final boolean anySpace) {
    return new TextNormalizer() {
      @Override
      String apply(String text) {
        StringBuilder out = new StringBuilder(text.length());
        int i = 0;
        while (i < text.length()) {
          int end = i;
          while (end < text.length() && isRunChar(text.codePointAt(end), anySpace)) {
            end += Character.charCount(text.codePointAt(end));
          }
          if (end > i && text.codePointCount(i, end) >= min) {
            out.append(content);
            i = end;
          } else if (end > i) {
            out.append(text, i, end);
            i = end;
          } else {
            int c = text.codePointAt(i);
            out.appendCodePoint(c);
            i += Character.charCount(c);
          }
        }
        return out.toString();
      }
    };
  }

  private static boolean isRunChar(int c, boolean anySpace) {
    return anySpace ? UnicodeClasses.isWhiteSpace(c) : c == ' ';
  }
}
