import Foundation
import Tokenizers

/// One tokenizer of a pipeline artifact (an entry of pipeline.text.tokenizers), read from its
/// folder (tokenizer.json, tokenizer_config.json) by Hugging Face's swift-transformers, giving the
/// ids and attention mask transformers gives with padding="max_length", truncation=True, as the
/// Android app's TextTokenizer.Encoding: the prompt's tokens cut to leave room for the
/// post-processor's special tokens, those added, then the pad id to the manifest's length.
///
/// swift-transformers (1.3.3) tokenizes; this class only truncates, adds and pads. Files it is
/// known to read differently from Hugging Face's tokenizers, or not at all (TokenizerSupport), are
/// refused when the folder is read.
final class PromptTokenizer {
  /// One prompt's ids and attention mask (1 for tokens, 0 for padding), maxLength long.
  struct Encoding {
    let ids: [Int64]
    let attentionMask: [Int64]
  }

  let spec: PipelineSpec.TokenizerSpec
  private let tokenizer: Tokenizer
  private let prefix: [Int]
  private let suffix: [Int]
  private let padId: Int

  /// A plain word, to see which special tokens the post-processor puts around a text.
  private static let probe = "photo"

  /// The tokenizer of the entry's files role, checked, then loaded by swift-transformers.
  static func load(_ spec: PipelineSpec.TokenizerSpec, manifest: ArtifactManifest) async throws -> PromptTokenizer {
    let folder = try manifest.url(for: spec.files)
    let config = try readJSON(folder, "tokenizer_config.json", spec.files)
    let data = try readJSON(folder, "tokenizer.json", spec.files)
    try TokenizerSupport.check(spec.files, config: config, data: data)
    let tokenizer: Tokenizer
    do {
      // strict (the default): a tokenizer_class swift-transformers does not know is an error.
      tokenizer = try await AutoTokenizer.from(modelFolder: folder)
    } catch {
      throw DemoError("\(spec.files)/: swift-transformers could not read it: \(error.localizedDescription)")
    }
    return try PromptTokenizer(spec, tokenizer, padToken: padToken(config, data))
  }

  private init(_ spec: PipelineSpec.TokenizerSpec, _ tokenizer: Tokenizer, padToken: String?) throws {
    // convertTokenToId falls back to the unknown token's id: check the id names the pad token.
    guard let padToken, let padId = tokenizer.convertTokenToId(padToken),
          tokenizer.convertIdToToken(padId) == padToken else {
      throw DemoError("\(spec.files)/tokenizer_config.json names no pad token in the vocabulary (pad_token = "
        + "\(padToken ?? "none")); prompts are padded to a fixed length, so one is needed")
    }
    let (prefix, suffix) = try Self.specials(spec.files, tokenizer)
    guard prefix.count + suffix.count <= spec.maxLength else {
      throw DemoError("a prompt length of \(spec.maxLength) leaves no room for the special tokens of \(spec.files)")
    }
    self.spec = spec
    self.tokenizer = tokenizer
    self.prefix = prefix
    self.suffix = suffix
    self.padId = padId
  }

  /// The prompt's ids and mask after the entry's preprocessing, as transformers' max_length
  /// padding with truncation: content first cut to the room the special tokens leave.
  func encode(_ prompt: String) -> Encoding {
    let room = spec.maxLength - prefix.count - suffix.count
    let text = spec.preprocess(prompt)
    // Empty text has no tokens in Hugging Face's tokenizers; swift-transformers' Metaspace would
    // give it a lone "▁" (the negative prompt is "").
    let content = text.isEmpty ? [] : tokenizer.encode(text: text, addSpecialTokens: false).prefix(room)
    let tokens = prefix + Array(content) + suffix
    let padding = spec.maxLength - tokens.count
    return Encoding(ids: tokens.map { Int64($0) } + [Int64](repeating: Int64(padId), count: padding),
                    attentionMask: [Int64](repeating: 1, count: tokens.count) + [Int64](repeating: 0, count: padding))
  }

  /// The ids the post-processor puts before and after a text's: what the probe's ids with special
  /// tokens have around its ids without them (found exactly once, or refused).
  private static func specials(_ files: String, _ tokenizer: Tokenizer) throws -> ([Int], [Int]) {
    let bare = tokenizer.encode(text: probe, addSpecialTokens: false)
    let full = tokenizer.encode(text: probe, addSpecialTokens: true)
    let starts = bare.isEmpty || full.count < bare.count ? [] : (0...(full.count - bare.count)).filter {
      Array(full[$0..<($0 + bare.count)]) == bare
    }
    guard starts.count == 1, let start = starts.first else {
      throw DemoError("\(files): the special tokens (\(full)) do not surround the text's tokens (\(bare));"
        + " not implemented by this app")
    }
    return (Array(full[..<start]), Array(full[(start + bare.count)...]))
  }

  /// The pad token tokenizer_config.json names (transformers pads with it), else tokenizer.json's.
  private static func padToken(_ config: [String: Any], _ data: [String: Any]) -> String? {
    if let token = config["pad_token"] as? String { return token }
    if let token = config["pad_token"] as? [String: Any] { return token["content"] as? String }
    return (data["padding"] as? [String: Any])?["pad_token"] as? String
  }

  /// A tokenizer file as a JSON object, nesting bounded as for manifest.json (the folder may come
  /// from anywhere; its sha256 was checked against the manifest).
  private static func readJSON(_ folder: URL, _ name: String, _ files: String) throws -> [String: Any] {
    guard let data = try? Data(contentsOf: folder.appendingPathComponent(name)) else {
      throw DemoError("\(files)/\(name) is missing; copy the artifact's \(files)/ folder too (README)")
    }
    guard !JSONDepth.exceeds(data) else {
      throw DemoError("\(files)/\(name) is not valid JSON: nested deeper than \(JSONDepth.maxDepth) levels")
    }
    guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw DemoError("\(files)/\(name) is not a JSON object")
    }
    return object
  }
}

/// What this app has read swift-transformers 1.3.3 do as Hugging Face's tokenizers do, checked
/// before it loads a folder: its factories stop the app (fatalError) on types they lack, and it
/// has no CLIP tokenizer (a CLIPTokenizer is refused in strict mode; its BPE has no "</w>"
/// end-of-word suffix, so the fallback would give other ids).
enum TokenizerSupport {
  /// tokenizer_config.json's tokenizer_class ("Fast" dropped, as swift-transformers does) and
  /// tokenizer.json's model type this app lets through: T5's Unigram (PixArt, SD3's third).
  static let classes = ["T5Tokenizer": "Unigram"]
  /// Precompiled is let through for real T5 files, though swift-transformers approximates it
  /// (NFKC and a few mappings, not the file's charsmap): ids can differ on unusual characters.
  static let normalizers: Set<String> = ["Sequence", "NFC", "NFKC", "Lowercase", "Strip", "Replace", "Precompiled"]
  /// No "Whitespace" (split there as WhitespaceSplit, not on \w+|[^\w\s]+), no Metaspace
  /// without split (it always splits there).
  static let preTokenizers: Set<String> = ["Sequence", "WhitespaceSplit", "Metaspace"]
  /// Those that add special tokens only when asked (the probe in PromptTokenizer relies on it).
  static let postProcessors: Set<String> = ["TemplateProcessing"]

  static func check(_ files: String, config: [String: Any], data: [String: Any]) throws {
    let className = (config["tokenizer_class"] as? String ?? "none").replacingOccurrences(of: "Fast", with: "")
    let model = data["model"] as? [String: Any] ?? [:]
    let modelType = model["type"] as? String ?? "none"
    guard classes[className] == modelType else {
      throw DemoError("\(files)/ is a \(className) (\(modelType)); this app tokenizes typed prompts with"
        + " swift-transformers, for T5 (Unigram) only (it has no CLIP tokenizer): export with --fixed-prompts FILE"
        + " to draw this model on iOS")
    }
    guard model["byte_fallback"] as? Bool != true else {
      throw DemoError("\(files)/tokenizer.json asks for byte fallback, which swift-transformers' Unigram lacks")
    }
    for (key, known, nested) in [("normalizer", normalizers, "normalizers"), ("pre_tokenizer", preTokenizers, "pretokenizers"),
                                 ("post_processor", postProcessors, "processors")] {
      if let type = unknownType(data[key], known, nested) {
        throw DemoError("\(files)/tokenizer.json \(key) type \(type) is not implemented by this app through"
          + " swift-transformers (\(known.sorted().joined(separator: ", ")))")
      }
    }
    for key in ["padding_side", "truncation_side"] {
      if let side = config[key] as? String, side != "right" {
        throw DemoError("\(files)/tokenizer_config.json \(key) is \(side); this app pads and truncates on the right only")
      }
    }
  }

  /// The first type of `node` (and of its Sequence's children) not in `known`; nil: none, or all known.
  private static func unknownType(_ node: Any?, _ known: Set<String>, _ nested: String) -> String? {
    guard let node = node as? [String: Any] else { return nil }  // null: no such step
    var type = node["type"] as? String ?? "none"
    if type == "Metaspace", node["split"] as? Bool == false { type = "Metaspace without split" }
    guard known.contains(type) else { return type }
    for child in node[nested] as? [Any] ?? [] {
      if let unknown = unknownType(child, known, nested) { return unknown }
    }
    return nil
  }
}
