package org.editmobile.demo;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The part of an EDiT artifact's manifest.json this app needs: what to call (program file,
 * input/output specs) and what to check it against (test vectors, sha256 of every file).
 *
 * <p>The folder may come from anywhere, so every path it names is confined to it: absolute
 * paths, ".." and symlinks leading out are refused, and no file is read past what fits in memory.
 */
public final class ArtifactManifest {

  // BEGIN MANIFEST KEYS -- every manifest field/value this app reads; tests/test_demo_apps.py
  // compares this block with what edit_mobile.export writes. Prefix = where the key lives:
  // TOP_ top-level key, MODEL_ key of "model", SPEC_ key of an inputs/outputs entry,
  // ROLE_ key of "files", FILE_ key of a files entry, VECTOR_ test-vector key prefix,
  // DTYPE_ / BACKEND_ values.
  public static final String SCHEMA_NAME = "edit-mobile/manifest";
  public static final int SCHEMA_VERSION = 1;
  /** A whole text-to-image pipeline (export --pipeline): v1's fields plus "pipeline". */
  public static final int PIPELINE_SCHEMA_VERSION = 2;
  public static final String TOP_SCHEMA = "schema";
  public static final String TOP_SCHEMA_VERSION = "schema_version";
  public static final String TOP_MODEL = "model";
  public static final String TOP_RESOLUTION = "resolution";
  public static final String TOP_BACKEND = "backend";
  public static final String TOP_PRECISION = "precision";
  public static final String TOP_INPUTS = "inputs";
  public static final String TOP_OUTPUTS = "outputs";
  public static final String TOP_FILES = "files";
  public static final String TOP_PIPELINE = "pipeline";
  public static final String MODEL_SOURCE = "source";
  public static final String SPEC_NAME = "name";
  public static final String SPEC_SHAPE = "shape";
  public static final String SPEC_DTYPE = "dtype";
  public static final String ROLE_PROGRAM = "program";
  /** The program's weights kept outside it (model.ptd, ExecuTorch program-data separation). */
  public static final String ROLE_WEIGHTS = "weights";
  public static final String ROLE_TEST_VECTORS = "test_vectors";
  /** Pipeline artifacts: the tokenizer folder and the scheduler folder (scheduler_config.json). */
  public static final String ROLE_TOKENIZER = "tokenizer";
  public static final String ROLE_SCHEDULER = "scheduler";
  public static final String FILE_PATH = "path";
  public static final String FILE_SHA256 = "sha256";
  public static final String FILE_BYTES = "bytes";
  public static final String VECTOR_INPUT_PREFIX = "input.";
  public static final String VECTOR_OUTPUT_PREFIX = "output.";
  public static final String DTYPE_FLOAT32 = "float32";
  public static final String DTYPE_FLOAT16 = "float16";
  public static final String BACKEND_XNNPACK = "xnnpack";
  public static final String BACKEND_VULKAN = "vulkan";
  public static final String BACKEND_QNN = "qnn";
  // END MANIFEST KEYS

  /** The largest Java array: a bigger file is refused, not truncated to an int length. */
  public static final long MAX_READ_BYTES = Integer.MAX_VALUE - 8;

  /** Manifests are a few kB; this bounds what a hostile one can make the app allocate. */
  public static final long MAX_MANIFEST_BYTES = 16L << 20;

  /** Backends whose program is an ExecuTorch .pte that this Android app can load. */
  private static final List<String> ANDROID_BACKENDS =
      Collections.unmodifiableList(
          java.util.Arrays.asList(BACKEND_XNNPACK, BACKEND_VULKAN, BACKEND_QNN));

  /** One input or output of the program, as the manifest declares it. */
  public static final class TensorSpec {
    public final String name;
    public final long[] shape;
    public final String dtype;

    TensorSpec(String name, long[] shape, String dtype) {
      this.name = name;
      this.shape = shape;
      this.dtype = dtype;
    }

    public long numel() {
      long count = 1;
      for (long dim : shape) {
        count *= dim;
      }
      return count;
    }
  }

  /**
   * One file of the artifact folder: relative path, where it is (checked to be inside the
   * folder), expected sha256 (hex) and size.
   */
  public static final class FileEntry {
    public final String role;
    public final String path;
    public final File file;
    public final String sha256;
    public final long bytes;

    FileEntry(String role, String path, File file, String sha256, long bytes) {
      this.role = role;
      this.path = path;
      this.file = file;
      this.sha256 = sha256;
      this.bytes = bytes;
    }
  }

  public final File folder;
  public final String modelSource;
  public final String resolution;
  public final String backend;
  public final String precision;
  public final List<TensorSpec> inputs;
  public final List<TensorSpec> outputs;
  public final Map<String, FileEntry> files;
  /** The "pipeline" object of a v2 manifest (read by PipelineSpec), null for a denoiser alone. */
  public final Map<String, Object> pipeline;

  private ArtifactManifest(
      File folder,
      String modelSource,
      String resolution,
      String backend,
      String precision,
      List<TensorSpec> inputs,
      List<TensorSpec> outputs,
      Map<String, FileEntry> files,
      Map<String, Object> pipeline) {
    this.folder = folder;
    this.modelSource = modelSource;
    this.resolution = resolution;
    this.backend = backend;
    this.precision = precision;
    this.inputs = inputs;
    this.outputs = outputs;
    this.files = files;
    this.pipeline = pipeline;
  }

  /** Reads folder/manifest.json; throws DemoException naming the field that is wrong. */
  public static ArtifactManifest read(File folder) throws IOException {
    File root = folder.getCanonicalFile();
    File manifestFile = inside(root, "manifest.json", "manifest.json");
    if (!manifestFile.isFile()) {
      throw new DemoException(
          "no manifest.json in " + folder + "; push an artifact folder there (see README)");
    }
    Map<String, Object> json;
    try {
      json = Json.parseObject(
          new String(readAll(manifestFile, MAX_MANIFEST_BYTES), StandardCharsets.UTF_8));
    } catch (IllegalArgumentException err) {
      throw new DemoException("manifest.json is not valid JSON: " + err.getMessage());
    }
    String schema = string(json, TOP_SCHEMA);
    int version = (int) number(json, TOP_SCHEMA_VERSION);
    if (!SCHEMA_NAME.equals(schema)
        || version != SCHEMA_VERSION && version != PIPELINE_SCHEMA_VERSION) {
      throw new DemoException(
          "manifest schema is " + schema + " v" + version + ", this app reads " + SCHEMA_NAME
              + " v" + SCHEMA_VERSION + " and v" + PIPELINE_SCHEMA_VERSION
              + "; re-export with a matching edit-mobile");
    }
    Map<String, Object> model = object(json, TOP_MODEL);
    List<Object> resolution = array(json, TOP_RESOLUTION);
    return new ArtifactManifest(
        root,
        String.valueOf(model.get(MODEL_SOURCE)),
        resolution.size() == 2
            ? longValue(resolution.get(0)) + "x" + longValue(resolution.get(1))
            : String.valueOf(resolution),
        string(json, TOP_BACKEND),
        string(json, TOP_PRECISION),
        specs(json, TOP_INPUTS),
        specs(json, TOP_OUTPUTS),
        fileEntries(root, object(json, TOP_FILES)),
        version == PIPELINE_SCHEMA_VERSION ? object(json, TOP_PIPELINE) : null);
  }

  /** The program (.pte) file, refused when its backend cannot run on Android. */
  public File programFileForAndroid() throws DemoException {
    if (!ANDROID_BACKENDS.contains(backend)) {
      throw new DemoException(
          "backend '" + backend + "' does not run in this Android app; export with --backend "
              + String.join(" / ", ANDROID_BACKENDS));
    }
    return fileFor(ROLE_PROGRAM);
  }

  /** The program's external weights file, or null when the program holds its weights. */
  public File weightsFileOrNull() {
    FileEntry entry = files.get(ROLE_WEIGHTS);
    return entry == null ? null : entry.file;
  }

  public File fileFor(String role) throws DemoException {
    FileEntry entry = files.get(role);
    if (entry == null) {
      throw new DemoException("manifest has no files." + role + " entry");
    }
    return entry.file;
  }

  /**
   * folder/relative, refused unless it stays inside folder (a canonical path): no absolute
   * path, no "..", no symlink leading out. {@code what} names the path in the message.
   */
  static File inside(File folder, String relative, String what) throws IOException {
    if (relative.isEmpty()) {
      throw new DemoException(what + " is an empty path; re-export the artifact");
    }
    if (relative.startsWith("/") || relative.startsWith("\\") || new File(relative).isAbsolute()) {
      throw new DemoException(
          what + " is an absolute path, outside the artifact folder; re-export the artifact");
    }
    for (String part : relative.split("[/\\\\]")) {
      if (part.equals("..")) {
        throw new DemoException(
            what + " climbs out with '..', outside the artifact folder; re-export the artifact");
      }
    }
    File file = new File(folder, relative).getCanonicalFile();
    if (!isUnder(folder, file)) {
      throw new DemoException(
          what + " resolves to " + file + ", outside the artifact folder (a symlink?);"
              + " push real files");
    }
    return file;
  }

  /** Whether canonical path {@code file} is {@code folder} itself or below it. */
  private static boolean isUnder(File folder, File file) {
    String root = folder.getPath();
    String path = file.getPath();
    return path.equals(root)
        || path.startsWith(root.endsWith(File.separator) ? root : root + File.separator);
  }

  /** Roles without which the demo cannot run; the others are checked when they were pushed. */
  public static boolean isRequiredRole(String role) {
    return role.equals(ROLE_PROGRAM) || role.equals(ROLE_WEIGHTS) || role.equals(ROLE_TEST_VECTORS);
  }

  /**
   * Checks size and sha256 of every listed file or folder that is on the device, and that the
   * required ones (program, its external weights if any, test vectors) are. Returns the roles checked; roles not pushed (the
   * PyTorch reference folder, say) are left out.
   */
  public List<String> verifyFiles() throws IOException {
    List<String> checked = new ArrayList<>();
    for (FileEntry entry : files.values()) {
      File file = entry.file;
      if (!file.exists()) {
        if (isRequiredRole(entry.role)) {
          throw new DemoException(
              "files." + entry.role + " = " + entry.path + " is missing; push the artifact folder");
        }
        continue;
      }
      long size = file.isDirectory() ? directorySize(file) : file.length();
      if (entry.bytes >= 0 && size != entry.bytes) {
        throw new DemoException(
            entry.path + " has " + size + " bytes, manifest says " + entry.bytes
                + "; the copy is incomplete, push it again");
      }
      String actual = file.isDirectory() ? directorySha256Hex(file) : sha256Hex(file);
      if (!actual.equalsIgnoreCase(entry.sha256)) {
        throw new DemoException(
            entry.path + " sha256 " + actual + " != manifest " + entry.sha256
                + "; the file was changed or truncated, push it again");
      }
      checked.add(entry.role);
    }
    return checked;
  }

  /**
   * The exporter's folder hash (a .mlpackage, the reference model): sha256 over
   * "relative/path\0<file sha256 hex>\n" for every file, sorted by path components.
   */
  public static String directorySha256Hex(File root) throws IOException {
    List<String> paths = new ArrayList<>();
    collectFiles(root.getCanonicalFile(), root.getCanonicalFile(), "", paths);
    Collections.sort(paths, ArtifactManifest::comparePathComponents);
    MessageDigest digest = newSha256();
    for (String relative : paths) {
      String line = relative + "\0" + sha256Hex(new File(root, relative)) + "\n";
      digest.update(line.getBytes(StandardCharsets.UTF_8));
    }
    return hex(digest.digest());
  }

  /** Python's pathlib sorts by components: "a/b" before "a.txt" although '.' < '/'. */
  static int comparePathComponents(String left, String right) {
    String[] a = left.split("/");
    String[] b = right.split("/");
    for (int i = 0; i < Math.min(a.length, b.length); i++) {
      int order = a[i].compareTo(b[i]);
      if (order != 0) {
        return order;
      }
    }
    return Integer.compare(a.length, b.length);
  }

  /** Relative paths of the files below dir; a symlink leading out of root is refused. */
  private static void collectFiles(File root, File dir, String prefix, List<String> out)
      throws IOException {
    File[] children = dir.listFiles();
    if (children == null) {
      return;
    }
    for (File child : children) {
      String relative = prefix + child.getName();
      File real = child.getCanonicalFile();
      if (!isUnder(root, real)) {
        throw new DemoException(
            root.getName() + "/" + relative + " resolves to " + real + ", outside "
                + root.getName() + "/ (a symlink); push real files");
      }
      if (child.isDirectory()) {
        collectFiles(root, child, relative + "/", out);
      } else if (child.isFile()) {
        out.add(relative);
      }
    }
  }

  private static long directorySize(File dir) throws IOException {
    File root = dir.getCanonicalFile();
    List<String> paths = new ArrayList<>();
    collectFiles(root, root, "", paths);
    long total = 0;
    for (String relative : paths) {
      total = Math.addExact(total, new File(root, relative).length());
    }
    return total;
  }

  public static String sha256Hex(File file) throws IOException {
    MessageDigest digest = newSha256();
    byte[] buffer = new byte[1 << 20];
    try (InputStream in = new FileInputStream(file)) {
      int read;
      while ((read = in.read(buffer)) > 0) {
        digest.update(buffer, 0, read);
      }
    }
    return hex(digest.digest());
  }

  private static MessageDigest newSha256() {
    try {
      return MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException err) {
      throw new IllegalStateException(err);
    }
  }

  private static String hex(byte[] bytes) {
    StringBuilder hex = new StringBuilder();
    for (byte b : bytes) {
      hex.append(String.format("%02x", b & 0xff));
    }
    return hex.toString();
  }

  /** The whole file, refused when longer than {@code limit} bytes (never cut to an int). */
  static byte[] readAll(File file, long limit) throws IOException {
    long length = file.length();
    if (length > limit) {
      throw new DemoException(
          file.getName() + " is " + length + " bytes, more than the " + limit
              + " this app reads; refused rather than truncated");
    }
    byte[] data = new byte[(int) length];
    try (InputStream in = new FileInputStream(file)) {
      int offset = 0;
      while (offset < data.length) {
        int read = in.read(data, offset, data.length - offset);
        if (read < 0) {
          throw new DemoException(file.getName() + " shrank while it was read; push it again");
        }
        offset += read;
      }
    }
    return data;
  }

  // ---- typed access with messages that name the field ----

  static List<TensorSpec> specs(Map<String, Object> root, String key) {
    List<TensorSpec> specs = new ArrayList<>();
    for (Object item : array(root, key)) {
      if (!(item instanceof Map)) {
        throw new DemoException("manifest " + key + " must hold objects");
      }
      @SuppressWarnings("unchecked")
      Map<String, Object> spec = (Map<String, Object>) item;
      List<Object> dims = array(spec, SPEC_SHAPE);
      long[] shape = new long[dims.size()];
      for (int i = 0; i < shape.length; i++) {
        shape[i] = longValue(dims.get(i));
      }
      specs.add(new TensorSpec(string(spec, SPEC_NAME), shape, string(spec, SPEC_DTYPE)));
    }
    if (specs.isEmpty()) {
      throw new DemoException("manifest " + key + " is empty");
    }
    return Collections.unmodifiableList(specs);
  }

  private static Map<String, FileEntry> fileEntries(File root, Map<String, Object> files)
      throws IOException {
    Map<String, FileEntry> entries = new LinkedHashMap<>();
    for (Map.Entry<String, Object> item : files.entrySet()) {
      if (!(item.getValue() instanceof Map)) {
        continue; // a role the exporter left null
      }
      @SuppressWarnings("unchecked")
      Map<String, Object> entry = (Map<String, Object>) item.getValue();
      Object bytes = entry.get(FILE_BYTES);
      String path = string(entry, FILE_PATH);
      entries.put(
          item.getKey(),
          new FileEntry(
              item.getKey(),
              path,
              inside(root, path, "files." + item.getKey() + " = " + path),
              string(entry, FILE_SHA256),
              bytes == null ? -1 : longValue(bytes)));
    }
    return Collections.unmodifiableMap(entries);
  }

  private static Object require(Map<String, Object> map, String key) {
    if (!map.containsKey(key) || map.get(key) == null) {
      throw new DemoException("manifest field '" + key + "' is missing");
    }
    return map.get(key);
  }

  static String string(Map<String, Object> map, String key) {
    Object value = require(map, key);
    if (!(value instanceof String)) {
      throw new DemoException("manifest field '" + key + "' must be a string");
    }
    return (String) value;
  }

  static double number(Map<String, Object> map, String key) {
    Object value = require(map, key);
    if (!(value instanceof Double)) {
      throw new DemoException("manifest field '" + key + "' must be a number");
    }
    return (Double) value;
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> object(Map<String, Object> map, String key) {
    Object value = require(map, key);
    if (!(value instanceof Map)) {
      throw new DemoException("manifest field '" + key + "' must be an object");
    }
    return (Map<String, Object>) value;
  }

  @SuppressWarnings("unchecked")
  static List<Object> array(Map<String, Object> map, String key) {
    Object value = require(map, key);
    if (!(value instanceof List)) {
      throw new DemoException("manifest field '" + key + "' must be an array");
    }
    return (List<Object>) value;
  }

  /** An integral JSON number; fractions and values past 2^53 (not exact in JSON) refused. */
  static long longValue(Object value) {
    double number = value instanceof Double ? (Double) value : Double.NaN;
    if (!(Math.abs(number) <= 9007199254740992.0 && number == Math.rint(number))) {
      throw new DemoException("manifest: expected an integer, got " + value);
    }
    return (long) number;
  }
}
