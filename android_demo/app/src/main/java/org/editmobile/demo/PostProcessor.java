package org.editmobile.demo;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The special tokens a tokenizer.json "post_processor" puts around one sequence: T5's
 * TemplateProcessing ("$A </s>"), CLIP's RobertaProcessing ("<|startoftext|> $A
 * <|endoftext|>"), BertProcessing alike, or a Sequence holding one of them next to ByteLevel
 * (which only moves offsets).
 */
final class PostProcessor {
  private PostProcessor() {}

  /** [prefix ids, suffix ids]. */
  static List<int[]> specials(ConfigFile json) {
    if (!json.has("post_processor")) {
      return Arrays.asList(new int[0], new int[0]);
    }
    return of(json.object("post_processor"));
  }

  private static List<int[]> of(ConfigFile spec) {
    String type = spec.string("type");
    switch (type) {
      case "TemplateProcessing":
        return template(spec);
      case "RobertaProcessing":
      case "BertProcessing":
        return Arrays.asList(
            new int[] {pairId(spec, "cls")}, new int[] {pairId(spec, "sep")});
      case "Sequence":
        return sequence(spec);
      default:
        throw new DemoException(spec.name + " type " + type + " is not implemented by this app"
            + " (TemplateProcessing, RobertaProcessing, BertProcessing)");
    }
  }

  private static List<int[]> sequence(ConfigFile spec) {
    List<int[]> found = Arrays.asList(new int[0], new int[0]);
    int index = 0;
    for (Object item : spec.list("processors")) {
      ConfigFile step = spec.item(item, "processors[" + index++ + "]");
      if (step.string("type").equals("ByteLevel")) {
        continue;
      }
      if (found.get(0).length + found.get(1).length > 0) {
        throw new DemoException(spec.name + " adds special tokens twice; not implemented");
      }
      found = of(step);
    }
    return found;
  }

  /** "single": specials before the sequence $A are the prefix, those after it the suffix. */
  private static List<int[]> template(ConfigFile spec) {
    ConfigFile tokens = spec.object("special_tokens");
    List<Integer> prefix = new ArrayList<>();
    List<Integer> suffix = new ArrayList<>();
    boolean seenSequence = false;
    int index = 0;
    for (Object item : spec.list("single")) {
      ConfigFile piece = spec.item(item, "single[" + index++ + "]");
      if (piece.has("Sequence")) {
        if (seenSequence || !piece.object("Sequence").string("id").equals("A")) {
          throw new DemoException(spec.name + " single must hold the sequence $A once");
        }
        seenSequence = true;
        continue;
      }
      String name = piece.object("SpecialToken").string("id");
      for (Object id : tokens.object(name).list("ids")) {
        (seenSequence ? suffix : prefix).add(tokens.nonNegativeInt(id, name + " ids"));
      }
    }
    if (!seenSequence) {
      throw new DemoException(spec.name + " single has no sequence $A");
    }
    return Arrays.asList(toArray(prefix), toArray(suffix));
  }

  /** ["<|startoftext|>", 49406]: the id the file gives. */
  private static int pairId(ConfigFile spec, String key) {
    List<Object> pair = spec.list(key);
    if (pair.size() != 2) {
      throw new DemoException(spec.name + " " + key + " must be [token, id], got " + pair);
    }
    return spec.nonNegativeInt(pair.get(1), key + " id");
  }

  private static int[] toArray(List<Integer> values) {
    int[] out = new int[values.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = values.get(i);
    }
    return out;
  }
}
