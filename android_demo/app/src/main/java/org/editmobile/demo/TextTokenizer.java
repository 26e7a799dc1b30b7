package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * A text encoder's tokenizer, read from a diffusers pipeline folder's tokenizer/ (tokenizer.json
 * as transformers writes it, and tokenizer_config.json), giving the ids and attention mask that
 * transformers gives with padding="max_length", truncation=True.
 *
 * <p>The steps are Hugging Face tokenizers': added tokens found in the raw text (those of
 * tokenizer.json, and the special tokens tokenizer_config.json names, which transformers adds),
 * normalizer, added tokens found in the normalized text, pre-tokenizer, the model on each word
 * (Unigram for T5, BPE for CLIP), truncation to leave room for the special tokens, the
 * post-processor's special tokens, padding. Options and types outside what is implemented are
 * refused when the folder is read.
 */
public abstract class TextTokenizer {
  /** Above this, tokenizer_config.json's model_max_length means "no limit" (transformers). */
  private static final double NO_LIMIT = 1 << 20;

  /** The special tokens of tokenizer_config.json that transformers registers as added tokens. */
  private static final String[] SPECIAL_TOKEN_KEYS = {
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"
  };

  private static final String[] SPECIAL_TOKEN_LISTS = {
    "additional_special_tokens", "extra_special_tokens"
  };

  /** One prompt's ids and attention mask (1 for tokens, 0 for padding), maxLength long. */
  public static final class Encoding {
    public final int[] ids;
    public final int[] attentionMask;

    Encoding(int[] ids, int[] attentionMask) {
      this.ids = ids;
      this.attentionMask = attentionMask;
    }
  }

  private final AddedTokens addedTokens;
  private final TextNormalizer normalizer;
  private final PreTokenizer preTokenizer;
  private final int[] prefix;
  private final int[] suffix;
  private final int padId;
  private final int modelMaxLength;

  protected TextTokenizer(ConfigFile json, ConfigFile config, Map<String, Integer> vocab) {
    addedTokens = new AddedTokens(json);
    addConfigSpecials(config, vocab);
    normalizer = TextNormalizer.fromJson(json, "normalizer");
    preTokenizer = PreTokenizer.fromJson(json, "pre_tokenizer");
    List<int[]> specials = PostProcessor.specials(json);
    prefix = specials.get(0);
    suffix = specials.get(1);
    padId = padId(json, config, vocab);
    double maxLength = config.number("model_max_length", 0);
    modelMaxLength = maxLength >= 1 && maxLength < NO_LIMIT ? (int) maxLength : 0;
    config.refuseUnless("padding_side", "right", "padding goes after the tokens", "right");
    config.refuseUnless("truncation_side", "right", "truncation keeps the start", "right");
  }

  /** The tokenizer of folder: Unigram (T5) or BPE (CLIP) as its tokenizer.json says. */
  public static TextTokenizer load(File folder) throws IOException {
    ConfigFile json = ConfigFile.read(new File(folder, "tokenizer.json"));
    ConfigFile config = ConfigFile.read(new File(folder, "tokenizer_config.json"));
    ConfigFile model = json.object("model");
    String type = model.string("type", "");
    if (type.equals("Unigram")) {
      return new UnigramTokenizer(json, config, model);
    }
    if (type.equals("BPE")) {
      return new BpeTokenizer(json, config, model);
    }
    throw new DemoException(
        json.name + " model type '" + type + "' is not implemented by this app (Unigram, BPE)");
  }

  /** tokenizer_config.json's model_max_length, the length pipelines pad CLIP prompts to. */
  public int modelMaxLength() {
    if (modelMaxLength == 0) {
      throw new DemoException(
          "tokenizer_config.json has no model_max_length; give the prompt length explicitly");
    }
    return modelMaxLength;
  }

  public Encoding encode(String text) {
    return encode(text, modelMaxLength());
  }

  /** Ids truncated and padded to maxLength, as transformers' padding="max_length". */
  public Encoding encode(String text, int maxLength) {
    int room = maxLength - prefix.length - suffix.length;
    if (room < 0) {
      throw new DemoException(
          "a prompt length of " + maxLength + " leaves no room for the special tokens");
    }
    List<Integer> tokens = tokenIds(text);
    int kept = Math.min(tokens.size(), room);
    int[] ids = new int[maxLength];
    int[] mask = new int[maxLength];
    Arrays.fill(ids, padId);
    int at = 0;
    for (int id : prefix) {
      ids[at++] = id;
    }
    for (int i = 0; i < kept; i++) {
      ids[at++] = tokens.get(i);
    }
    for (int id : suffix) {
      ids[at++] = id;
    }
    Arrays.fill(mask, 0, at, 1);
    return new Encoding(ids, mask);
  }

  /** The text's ids without special tokens, truncation or padding. */
  public List<Integer> tokenIds(String text) {
    List<Integer> ids = new ArrayList<>();
    for (AddedTokens.Segment raw : addedTokens.splitRaw(text)) {
      if (raw.isToken()) {
        ids.add(raw.id);
        continue;
      }
      for (AddedTokens.Segment part : addedTokens.splitNormalized(normalizer.apply(raw.text))) {
        if (part.isToken()) {
          ids.add(part.id);
          continue;
        }
        for (String word : preTokenizer.split(part.text)) {
          if (!word.isEmpty()) {
            tokenizeWord(word, ids);
          }
        }
      }
    }
    return ids;
  }

  /** Appends the model's ids for one pre-tokenized word. */
  protected abstract void tokenizeWord(String word, List<Integer> out);

  /** tokenizer_config.json's special tokens become added tokens too, as transformers does. */
  private void addConfigSpecials(ConfigFile config, Map<String, Integer> vocab) {
    addedTokens.addDeclared(config);
    List<String> specials = new ArrayList<>();
    for (String key : SPECIAL_TOKEN_KEYS) {
      String token = tokenString(config, key);
      if (token != null) {
        specials.add(token);
      }
    }
    for (String key : SPECIAL_TOKEN_LISTS) {
      Object value = config.raw(key);
      // a list, or (transformers 5) an object of named tokens
      Iterable<?> items = value instanceof Map ? ((Map<?, ?>) value).values()
          : value instanceof List ? (List<?>) value : Collections.emptyList();
      for (Object item : items) {
        boolean plain = item instanceof String;
        specials.add(plain ? (String) item : config.item(item, key).string("content"));
      }
    }
    for (String token : specials) {
      addedTokens.addSpecial(token, vocab.get(token));
    }
  }

  /** The pad token tokenizer_config.json names (transformers uses it), else tokenizer.json's. */
  private int padId(ConfigFile json, ConfigFile config, Map<String, Integer> vocab) {
    String pad = tokenString(config, "pad_token");
    if (pad == null && json.has("padding")) {
      pad = json.object("padding").string("pad_token", null);
    }
    Integer id = pad == null ? null : idOf(pad, vocab);
    if (id == null) {
      throw new DemoException(
          "tokenizer_config.json names no pad token in the vocabulary (pad_token = " + pad
              + "); prompts are padded to a fixed length, so one is needed");
    }
    return id;
  }

  /** A token named in tokenizer_config.json: a string, or an AddedToken object's content. */
  static String tokenString(ConfigFile config, String key) {
    Object value = config.raw(key);
    if (value instanceof Map) {
      return config.object(key).string("content");
    }
    return value == null ? null : config.string(key);
  }

  final Integer idOf(String token, Map<String, Integer> vocab) {
    Integer added = addedTokens.all.get(token);
    return added != null ? added : vocab.get(token);
  }
}
