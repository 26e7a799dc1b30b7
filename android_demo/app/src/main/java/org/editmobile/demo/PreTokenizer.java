package org.editmobile.demo;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The "pre_tokenizer" of a tokenizer.json: splits normalized text into the words the model
 * tokenizes one by one. Implemented: what T5 (WhitespaceSplit, Metaspace) and CLIP (Split on
 * CLIP's regex, ByteLevel) tokenizers use, and Sequence of these; anything else is refused.
 */
abstract class PreTokenizer {
  abstract List<String> split(String text);

  /** CLIP's word pattern (transformers' CLIPTokenizer), the one Split regex implemented. */
  static final String CLIP_PATTERN =
      "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]"
          + "|[^\\s\\p{L}\\p{N}]+";

  static final PreTokenizer NONE =
      new PreTokenizer() {
        @Override
        List<String> split(String text) {
          return Collections.singletonList(text);
        }
      };

  static PreTokenizer fromJson(ConfigFile json, String key) {
    return json.has(key) ? of(json.object(key)) : NONE;
  }

  private static PreTokenizer of(ConfigFile spec) {
    String type = spec.string("type");
    switch (type) {
      case "Sequence":
        return sequence(spec);
      case "WhitespaceSplit":
        return WHITESPACE_SPLIT;
      case "Metaspace":
        return metaspace(spec);
      case "Split":
        return clipSplit(spec);
      case "ByteLevel":
        return byteLevel(spec);
      default:
        throw new DemoException(
            spec.name + " type " + type + " is not implemented by this app (it implements "
                + "Sequence, WhitespaceSplit, Metaspace, Split with CLIP's pattern, ByteLevel)");
    }
  }

  private static PreTokenizer sequence(ConfigFile spec) {
    final List<PreTokenizer> steps = new ArrayList<>();
    int index = 0;
    for (Object item : spec.list("pretokenizers")) {
      steps.add(of(spec.item(item, "pretokenizers[" + index++ + "]")));
    }
    return new PreTokenizer() {
      @Override
      List<String> split(String text) {
        List<String> pieces = Collections.singletonList(text);
        for (PreTokenizer step : steps) {
          List<String> next = new ArrayList<>();
          for (String piece : pieces) {
            next.addAll(step.split(piece));
          }
          pieces = next;
        }
        return pieces;
      }
    };
  }

  /** Runs of non-white-space characters. */
  static final PreTokenizer WHITESPACE_SPLIT =
      new PreTokenizer() {
        @Override
        List<String> split(String text) {
          List<String> out = new ArrayList<>();
          int i = 0;
          while (i < text.length()) {
            int end = i;
            while (end < text.length() && !UnicodeClasses.isWhiteSpace(text.codePointAt(end))) {
              end += Character.charCount(text.codePointAt(end));
            }
            if (end > i) {
              out.add(text.substring(i, end));
              i = end;
            } else {
              i += Character.charCount(text.codePointAt(i));
            }
          }
          return out;
        }
      };

  /**
   * SentencePiece's word marker: spaces become the replacement ("▁"), which is also put in
   * front ("always") unless already there, then each replacement starts a new word.
   */
  private static PreTokenizer metaspace(ConfigFile spec) {
    final String replacement = spec.string("replacement");
    if (replacement.codePointCount(0, replacement.length()) != 1) {
      throw new DemoException(spec.name + " replacement must be one character, got " + replacement);
    }
    // Files older than tokenizers 0.14 say add_prefix_space instead of prepend_scheme.
    String fallback = spec.bool("add_prefix_space", true) ? "always" : "never";
    String scheme = spec.string("prepend_scheme", fallback);
    spec.refuseUnless("prepend_scheme", fallback, "the \"first\" scheme needs original offsets",
        "always", "never");
    final boolean prepend = scheme.equals("always");
    final boolean splitWords = spec.bool("split", true);
    return new PreTokenizer() {
      @Override
      List<String> split(String text) {
        String marked = text.replace(" ", replacement);
        if (prepend && !marked.startsWith(replacement)) {
          marked = replacement + marked;
        }
        return splitWords ? splitBefore(marked, replacement) : Collections.singletonList(marked);
      }
    };
  }

  /** Pieces that each start at an occurrence of marker (the text before the first one too). */
  private static List<String> splitBefore(String text, String marker) {
    List<String> out = new ArrayList<>();
    int start = 0;
    for (int at = text.indexOf(marker); at >= 0; at = text.indexOf(marker, at + marker.length())) {
      if (at > start) {
        out.add(text.substring(start, at));
        start = at;
      }
    }
    if (start < text.length()) {
      out.add(text.substring(start));
    }
    return out;
  }

  /** Split with CLIP's pattern, matches kept and the rest (white space) removed. */
  private static PreTokenizer clipSplit(ConfigFile spec) {
    ConfigFile pattern = spec.object("pattern");
    String regex = pattern.has("Regex") ? pattern.string("Regex") : null;
    if (!CLIP_PATTERN.equals(regex)) {
      Object shown = regex != null ? regex : pattern.raw("String");
      throw new DemoException(spec.name + " pattern " + shown
          + " is not implemented by this app (it implements CLIP's word regex)");
    }
    spec.refuseUnless("behavior", null, "CLIP splits with Removed", "Removed");
    spec.refuseUnless("invert", null, "CLIP keeps the matches", true);
    return new PreTokenizer() {
      @Override
      List<String> split(String text) {
        return RegexWords.clip(text);
      }
    };
  }

  /**
   * GPT-2's byte-level step: optionally its word regex, then each UTF-8 byte written as the
   * printable character GPT-2's bytes_to_unicode assigns it.
   */
  private static PreTokenizer byteLevel(ConfigFile spec) {
    spec.refuseUnless("add_prefix_space", true, "CLIP adds no prefix space", false);
    final boolean useRegex = spec.bool("use_regex", true);
    return new PreTokenizer() {
      @Override
      List<String> split(String text) {
        List<String> words = useRegex ? RegexWords.gpt2(text) : Collections.singletonList(text);
        List<String> out = new ArrayList<>(words.size());
        for (String word : words) {
          out.add(bytesAsChars(word));
        }
        return out;
      }
    };
  }

  private static final char[] BYTE_CHARS = byteChars();

  /** GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest 256 + n. */
  private static char[] byteChars() {
    char[] chars = new char[256];
    int next = 256;
    for (int b = 0; b < 256; b++) {
      boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      chars[b] = (char) (printable ? b : next++);
    }
    return chars;
  }

  static String bytesAsChars(String word) {
    byte[] bytes = word.getBytes(StandardCharsets.UTF_8);
    StringBuilder out = new StringBuilder(bytes.length);
    for (byte b : bytes) {
      out.append(BYTE_CHARS[b & 0xFF]);
    }
    return out.toString();
  }
}
