package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

/**
 * A JSON object read from a pipeline folder (tokenizer.json, tokenizer_config.json,
 * scheduler_config.json) with typed access whose refusals name the file and the key.
 */
public final class ConfigFile {
  /** A real CLIP tokenizer.json is ~4 MB; a T5 one with its charsmap ~2.5 MB. */
  public static final long MAX_BYTES = 64L << 20;

  /** Names the object in messages, e.g. "scheduler_config.json" or "tokenizer.json model". */
  public final String name;

  private final Map<String, Object> values;

  public ConfigFile(String name, Map<String, Object> values) {
    this.name = name;
    this.values = values;
  }

  public static ConfigFile read(File file) throws IOException {
    if (!file.isFile()) {
      throw new DemoException("no " + file.getName() + " in " + file.getParent());
    }
    String text = new String(ArtifactManifest.readAll(file, MAX_BYTES), StandardCharsets.UTF_8);
    try {
      return new ConfigFile(file.getName(), Json.parsePythonObject(text));
    } catch (IllegalArgumentException err) {
      throw new DemoException(file.getName() + " is not valid JSON: " + err.getMessage());
    }
  }

  public Iterable<String> keys() {
    return values.keySet();
  }

  public boolean has(String key) {
    return values.get(key) != null;
  }

  public Object raw(String key) {
    return values.get(key);
  }

  public String string(String key) {
    Object value = require(key);
    if (!(value instanceof String)) {
      throw wrong(key, "a string");
    }
    return (String) value;
  }

  public String string(String key, String fallback) {
    return has(key) ? string(key) : fallback;
  }

  public double number(String key) {
    Object value = require(key);
    if (!(value instanceof Double)) {
      throw wrong(key, "a number");
    }
    return (Double) value;
  }

  public double number(String key, double fallback) {
    return has(key) ? number(key) : fallback;
  }

  /** An integer in [min, max]; fractions refused. */
  public int integer(String key, int fallback, int min, int max) {
    if (!has(key)) {
      return fallback;
    }
    double value = number(key);
    if (!(value >= min && value <= max && value == Math.rint(value))) {
      throw wrong(key, "an integer in [" + min + ", " + max + "]");
    }
    return (int) value;
  }

  /** A JSON number that is a token id or count: an integer in [0, 2^31). */
  public int nonNegativeInt(Object value, String what) {
    double number = value instanceof Double ? (Double) value : Double.NaN;
    if (!(number >= 0 && number <= Integer.MAX_VALUE && number == Math.rint(number))) {
      throw new DemoException(name + ": " + what + " must be an integer >= 0, got " + value);
    }
    return (int) number;
  }

  public boolean bool(String key, boolean fallback) {
    if (!has(key)) {
      return fallback;
    }
    Object value = values.get(key);
    if (!(value instanceof Boolean)) {
      throw wrong(key, "true or false");
    }
    return (Boolean) value;
  }

  @SuppressWarnings("unchecked")
  public ConfigFile object(String key) {
    Object value = require(key);
    if (!(value instanceof Map)) {
      throw wrong(key, "an object");
    }
    return new ConfigFile(name + " " + key, (Map<String, Object>) value);
  }

  @SuppressWarnings("unchecked")
  public List<Object> list(String key) {
    Object value = require(key);
    if (!(value instanceof List)) {
      throw wrong(key, "an array");
    }
    return (List<Object>) value;
  }

  /** An element of a list read from this file as an object (e.g. one added token). */
  @SuppressWarnings("unchecked")
  public ConfigFile item(Object value, String what) {
    if (!(value instanceof Map)) {
      throw new DemoException(name + ": " + what + " must be an object, got " + value);
    }
    return new ConfigFile(name + " " + what, (Map<String, Object>) value);
  }

  /**
   * Refuses an option whose value (or {@code fallback}, the library's default, when absent) is
   * none of {@code implemented}: one line saying so, rather than a result that silently differs.
   */
  public void refuseUnless(String key, Object fallback, String why, Object... implemented) {
    Object value = has(key) ? values.get(key) : fallback;
    for (Object ok : implemented) {
      if (ok == null ? value == null : ok.equals(value)) {
        return;
      }
    }
    throw new DemoException(
        name + " has " + key + " = " + value + ", which this app does not implement (" + why + ")");
  }

  private Object require(String key) {
    if (!has(key)) {
      throw new DemoException(name + " has no '" + key + "'");
    }
    return values.get(key);
  }

  private DemoException wrong(String key, String expected) {
    return new DemoException(
        name + " '" + key + "' must be " + expected + ", got " + values.get(key));
  }
}
