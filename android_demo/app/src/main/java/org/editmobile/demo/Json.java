package org.editmobile.demo;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small strict JSON reader: objects become LinkedHashMap, arrays ArrayList, numbers Double,
 * plus String, Boolean and null.
 *
 * <p>Why not org.json: it exists on Android but not on a desktop JVM, and this file, like the
 * rest of the plain-Java logic, is compiled and run by tests/test_demo_apps.py with javac.
 *
 * <p>Every malformed input, hostile ones included, ends in IllegalArgumentException: nesting is
 * bounded (the reader recurses, so 100k '[' would otherwise overflow the stack) and numbers
 * must be finite.
 */
public final class Json {
  /** Deeper than any manifest or safetensors header; far below what the thread stack holds. */
  public static final int MAX_DEPTH = 64;

  private final String text;
  /** Python's json module writes Infinity, -Infinity and NaN (diffusers configs hold them). */
  private final boolean pythonNonFinite;
  private int pos;
  private int depth;

  private Json(String text, boolean pythonNonFinite) {
    this.text = text;
    this.pythonNonFinite = pythonNonFinite;
  }

  public static Object parse(String text) {
    return parse(text, false);
  }

  private static Object parse(String text, boolean pythonNonFinite) {
    Json reader = new Json(text, pythonNonFinite);
    reader.skipWhitespace();
    Object value = reader.readValue();
    reader.skipWhitespace();
    if (reader.pos != text.length()) {
      throw reader.error("trailing characters after the JSON value");
    }
    return value;
  }

  public static Map<String, Object> parseObject(String text) {
    return asObject(parse(text, false));
  }

  /**
   * A JSON object as Python's json.dumps writes it, Infinity / -Infinity / NaN included (a
   * diffusers scheduler_config.json has "lambda_min_clipped": -Infinity). Manifests stay strict.
   */
  public static Map<String, Object> parsePythonObject(String text) {
    return asObject(parse(text, true));
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> asObject(Object value) {
    if (!(value instanceof Map)) {
      throw new IllegalArgumentException("expected a JSON object at the top level");
    }
    return (Map<String, Object>) value;
  }

  private Object readValue() {
    if (pos >= text.length()) {
      throw error("unexpected end of JSON");
    }
    char c = text.charAt(pos);
    switch (c) {
      case '{':
        return readObject();
      case '[':
        return readArray();
      case '"':
        return readString();
      case 't':
        expectWord("true");
        return Boolean.TRUE;
      case 'f':
        expectWord("false");
        return Boolean.FALSE;
      case 'n':
        expectWord("null");
        return null;
      default:
        return readNumber();
    }
  }

  private Map<String, Object> readObject() {
    enter();
    Map<String, Object> object = new LinkedHashMap<>();
    pos++; // '{'
    skipWhitespace();
    if (peek() == '}') {
      pos++;
      depth--;
      return object;
    }
    while (true) {
      skipWhitespace();
      if (peek() != '"') {
        throw error("expected a string key");
      }
      String key = readString();
      skipWhitespace();
      expectChar(':');
      skipWhitespace();
      object.put(key, readValue());
      skipWhitespace();
      char next = peek();
      pos++;
      if (next == '}') {
        depth--;
        return object;
      }
      if (next != ',') {
        throw error("expected ',' or '}' in an object");
      }
    }
  }

  private List<Object> readArray() {
    enter();
    List<Object> array = new ArrayList<>();
    pos++; // '['
    skipWhitespace();
    if (peek() == ']') {
      pos++;
      depth--;
      return array;
    }
    while (true) {
      skipWhitespace();
      array.add(readValue());
      skipWhitespace();
      char next = peek();
      pos++;
      if (next == ']') {
        depth--;
        return array;
      }
      if (next != ',') {
        throw error("expected ',' or ']' in an array");
      }
    }
  }

  private String readString() {
    pos++; // opening quote
    StringBuilder out = new StringBuilder();
    while (true) {
      if (pos >= text.length()) {
        throw error("unterminated string");
      }
      char c = text.charAt(pos++);
      if (c == '"') {
        return out.toString();
      }
      if (c != '\\') {
        out.append(c);
        continue;
      }
      char escaped = peek();
      pos++;
      switch (escaped) {
        case '"':
        case '\\':
        case '/':
          out.append(escaped);
          break;
        case 'b':
          out.append('\b');
          break;
        case 'f':
          out.append('\f');
          break;
        case 'n':
          out.append('\n');
          break;
        case 'r':
          out.append('\r');
          break;
        case 't':
          out.append('\t');
          break;
        case 'u':
          out.append(readHex4());
          break;
        default:
          throw error("bad escape \\" + escaped);
      }
    }
  }

  private char readHex4() {
    if (pos + 4 > text.length()) {
      throw error("\\u escape cut short");
    }
    try {
      char c = (char) Integer.parseInt(text.substring(pos, pos + 4), 16);
      pos += 4;
      return c;
    } catch (NumberFormatException err) {
      throw error("bad \\u escape");
    }
  }

  private Double readNumber() {
    if (pythonNonFinite) {
      for (String word : PYTHON_NON_FINITE) {
        if (text.startsWith(word, pos)) {
          pos += word.length();
          return Double.valueOf(word); // Java reads these three words too
        }
      }
    }
    int start = pos;
    while (pos < text.length() && "+-0123456789.eE".indexOf(text.charAt(pos)) >= 0) {
      pos++;
    }
    if (start == pos) {
      throw error("unexpected character '" + text.charAt(pos) + "'");
    }
    double value;
    try {
      value = Double.parseDouble(text.substring(start, pos));
    } catch (NumberFormatException err) {
      throw error("bad number " + text.substring(start, pos));
    }
    if (Double.isInfinite(value)) {
      throw error("number " + text.substring(start, pos) + " is out of range");
    }
    return value;
  }

  private static final String[] PYTHON_NON_FINITE = {"Infinity", "-Infinity", "NaN"};

  /** One level deeper into an object or array; refused past MAX_DEPTH. */
  private void enter() {
    if (++depth > MAX_DEPTH) {
      throw error("nested deeper than " + MAX_DEPTH + " levels");
    }
  }

  private void expectWord(String word) {
    if (!text.startsWith(word, pos)) {
      throw error("expected " + word);
    }
    pos += word.length();
  }

  private void expectChar(char expected) {
    if (peek() != expected) {
      throw error("expected '" + expected + "'");
    }
    pos++;
  }

  private char peek() {
    if (pos >= text.length()) {
      throw error("unexpected end of JSON");
    }
    return text.charAt(pos);
  }

  private void skipWhitespace() {
    while (pos < text.length() && Character.isWhitespace(text.charAt(pos))) {
      pos++;
    }
  }

  private IllegalArgumentException error(String what) {
    return new IllegalArgumentException("bad JSON at character " + pos + ": " + what);
  }

  /** Writes a string as a JSON string literal (for the result log line). */
  public static String quote(String value) {
    StringBuilder out = new StringBuilder("\"");
    for (int i = 0; i < value.length(); i++) {
      char c = value.charAt(i);
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }

  /**
   * A value as JSON text: Map (string keys, in its order), List, String, Boolean, null, and
   * numbers (Integer and Long as integers, Double in full precision). A NaN or infinite number
   * is refused: JSON has none, and no reader of the results may be handed one.
   */
  public static String write(Object value) {
    StringBuilder out = new StringBuilder();
    write(value, out);
    return out.toString();
  }

  private static void write(Object value, StringBuilder out) {
    if (value == null) {
      out.append("null");
    } else if (value instanceof String) {
      out.append(quote((String) value));
    } else if (value instanceof Boolean || value instanceof Integer || value instanceof Long) {
      out.append(value);
    } else if (value instanceof Double) {
      double number = (Double) value;
      if (Double.isNaN(number) || Double.isInfinite(number)) {
        throw new IllegalArgumentException("JSON has no " + number);
      }
      out.append(number);
    } else if (value instanceof Map) {
      out.append('{');
      String separator = "";
      for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
        out.append(separator).append(quote((String) entry.getKey())).append(": ");
        write(entry.getValue(), out);
        separator = ", ";
      }
      out.append('}');
    } else if (value instanceof List) {
      out.append('[');
      String separator = "";
      for (Object item : (List<?>) value) {
        out.append(separator);
        write(item, out);
        separator = ", ";
      }
      out.append(']');
    } else {
      throw new IllegalArgumentException("cannot write a " + value.getClass().getName() + " as JSON");
    }
  }
}
