package org.editmobile.demo;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The "added_tokens" of a tokenizer.json (special tokens such as "</s>" or "<|endoftext|>"):
 * where the text spells one, it becomes that token and the model never sees it. As in Hugging
 * Face tokenizers, tokens marked "normalized": false are found in the raw text, the others in
 * the normalized text; at each position the longest token wins (leftmost-longest).
 */
final class AddedTokens {
  /** A piece of text, or an added token (id >= 0) found in it. */
  static final class Segment {
    final String text;
    final int id;

    Segment(String text, int id) {
      this.text = text;
      this.id = id;
    }

    boolean isToken() {
      return id >= 0;
    }
  }

  private final Map<String, Integer> raw = new LinkedHashMap<>();
  private final Map<String, Integer> normalized = new LinkedHashMap<>();
  final Map<String, Integer> all = new LinkedHashMap<>();

  AddedTokens(ConfigFile json) {
    if (!json.has("added_tokens")) {
      return;
    }
    int index = 0;
    for (Object item : json.list("added_tokens")) {
      ConfigFile token = json.item(item, "added_tokens[" + index++ + "]");
      add(token, token.integer("id", -1, 0, Integer.MAX_VALUE));
    }
  }

  /** tokenizer_config.json's added_tokens_decoder ({"id": {"content": ...}}), as transformers. */
  void addDeclared(ConfigFile config) {
    if (!config.has("added_tokens_decoder")) {
      return;
    }
    ConfigFile declared = config.object("added_tokens_decoder");
    for (String id : declared.keys()) {
      ConfigFile token = declared.object(id);
      if (!all.containsKey(token.string("content"))) {
        add(token, parseId(id, declared));
      }
    }
  }

  private static int parseId(String id, ConfigFile where) {
    try {
      return Integer.parseInt(id);
    } catch (NumberFormatException err) {
      throw new DemoException(where.name + " key " + id + " is not a token id");
    }
  }

  private void add(ConfigFile token, int id) {
    String content = token.string("content");
    for (String flag : new String[] {"lstrip", "rstrip", "single_word"}) {
      token.refuseUnless(flag, false, "added tokens that strip or match whole words", false);
    }
    if (id < 0 || content.isEmpty()) {
      throw new DemoException(token.name + " needs an id and a non-empty content");
    }
    (token.bool("normalized", true) ? normalized : raw).put(content, id);
    all.put(content, id);
  }

  /**
   * A special token tokenizer_config.json names (pad_token, ...): transformers registers each as
   * an added token matched in the raw text, so a pad token "," splits "," off as itself.
   */
  void addSpecial(String content, Integer id) {
    if (all.containsKey(content)) {
      return;
    }
    if (id == null) {
      throw new DemoException("tokenizer_config.json names the special token " + content
          + ", which is not in the vocabulary; transformers would give it a new id, this app"
          + " does not");
    }
    raw.put(content, id);
    all.put(content, id);
  }

  /** Splits the raw text on the tokens matched before normalization. */
  List<Segment> splitRaw(String text) {
    return split(text, raw);
  }

  /** Splits normalized text on the tokens matched after normalization. */
  List<Segment> splitNormalized(String text) {
    return split(text, normalized);
  }

  private static List<Segment> split(String text, Map<String, Integer> tokens) {
    List<Segment> out = new ArrayList<>();
    int start = 0;
    int i = 0;
    while (i < text.length()) {
      String found = longestAt(text, i, tokens);
      if (found == null) {
        i++;
        continue;
      }
      if (i > start) {
        out.add(new Segment(text.substring(start, i), -1));
      }
      out.add(new Segment(found, tokens.get(found)));
      i += found.length();
      start = i;
    }
    if (start < text.length()) {
      out.add(new Segment(text.substring(start), -1));
    }
    return out;
  }

  private static String longestAt(String text, int at, Map<String, Integer> tokens) {
    String best = null;
    for (String token : tokens.keySet()) {
      if (text.startsWith(token, at) && (best == null || token.length() > best.length())) {
        best = token;
      }
    }
    return best;
  }
}
