//! The fast loader of a `tokenizer.json`: typed serde visitors straight into the tables.
//!
//! The reference loader ([`FastBpe::from_value`]) builds a `serde_json::Value` of the whole file (a
//! `BTreeMap` of the 151,000 vocabulary entries for Qwen3, one `String` per entry and per merge)
//! and then walks it. This one visits the file once: the vocabulary's keys are borrowed from the
//! text (owned only when they contain an escape) and converted to bytes into one arena, the merges
//! are borrowed strings, and only the small members (`normalizer`, `pre_tokenizer`,
//! `added_tokens`, the model's flags...) become `Value`s, checked by the very functions the
//! reference loader uses. Then the merges are resolved and the table of vocabulary counts is
//! computed on all threads of the current rayon pool.
//!
//! It accepts a subset of what the reference accepts and builds the same tokenizer from it; on
//! anything else (a syntax error, an unexpected type, a refused feature, a token missing from the
//! vocabulary...) it returns `None` and the reference loader decides, with its error messages.
//! A member given twice keeps its last value, as in a `Value`. `tests::fast_and_reference_loaders_agree`
//! compares the two on every fixture and on edited variants.

use std::borrow::Cow;
use std::fmt;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cache::{self, MergeTable};
use crate::{byte_level_chars, parse_added, parse_head, parse_model_head, FastBpe, Parts};

/// Code point -> byte of GPT-2's byte-level alphabet (every such char is below U+0144);
/// `NO_BYTE` for the other code points.
struct CharBytes([u16; 0x144]);

const NO_BYTE: u16 = u16::MAX;

impl CharBytes {
    fn new() -> CharBytes {
        let mut t = [NO_BYTE; 0x144];
        for (b, c) in byte_level_chars().iter().enumerate() {
            t[*c as usize] = b as u16;
        }
        CharBytes(t)
    }

    /// Append the bytes `s` stands for to `out`; false (and `out` partly extended) when `s` has a
    /// char outside the byte-level alphabet.
    #[inline]
    fn push_bytes(&self, s: &str, out: &mut Vec<u8>) -> bool {
        for c in s.chars() {
            match self.0.get(c as usize) {
                Some(&b) if b != NO_BYTE => out.push(b as u8),
                _ => return false,
            }
        }
        true
    }
}

/// A JSON string, borrowed from the input when it has no escape.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A vocabulary id: a JSON integer in `0..=u32::MAX` (what `Value::as_u64` then `u32::try_from`
/// accept; `-0` is the integer 0 for both).
struct Id(u32);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                u32::try_from(v).map(Id).map_err(|_| E::custom("id out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u32::try_from(v).map(Id).map_err(|_| E::custom("id out of range"))
            }
        }
        d.deserialize_u64(V)
    }
}

/// The vocabulary: entries made of byte-level chars as bytes in one arena, the others by string.
struct Vocab<'a> {
    arena: Vec<u8>,
    /// (start, end, id) in the arena, in file order (a repeated entry: the last one counts).
    entries: Vec<(u32, u32, u32)>,
    /// Entries with a char outside the byte-level alphabet (never produced by BPE, but merges may
    /// name them).
    other: FxHashMap<Cow<'a, str>, u32>,
}

struct VocabSeed<'c>(&'c CharBytes);

impl<'de> DeserializeSeed<'de> for VocabSeed<'_> {
    type Value = Vocab<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vocab<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for VocabSeed<'_> {
    type Value = Vocab<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the vocabulary object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vocab<'de>, A::Error> {
        let n = map.size_hint().unwrap_or(0);
        let mut v =
            Vocab { arena: Vec::with_capacity(8 * n), entries: Vec::with_capacity(n), other: FxHashMap::default() };
        while let Some(CowStr(tok)) = map.next_key()? {
            let Id(id) = map.next_value()?;
            let start = v.arena.len();
            if self.0.push_bytes(&tok, &mut v.arena) {
                let end = u32::try_from(v.arena.len()).map_err(|_| de::Error::custom("vocabulary too large"))?;
                v.entries.push((start as u32, end, id));
            } else {
                v.arena.truncate(start);
                v.other.insert(tok, id);
            }
        }
        Ok(v)
    }
}

/// One merge, "a b" or ["a", "b"] (the string form is split later, as the reference does).
enum Merge<'a> {
    Joined(Cow<'a, str>),
    Pair(Cow<'a, str>, Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Merge<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Merge<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a merge")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Merge::Joined(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Merge::Joined(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Merge::Joined(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = || de::Error::custom("a merge of two strings");
                let CowStr(a) = seq.next_element()?.ok_or_else(missing)?;
                let CowStr(b) = seq.next_element()?.ok_or_else(missing)?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(missing());
                }
                Ok(Merge::Pair(a, b))
            }
        }
        d.deserialize_any(V)
    }
}

/// The model object: its small members as a `Value` object, the vocabulary and the merges typed.
struct Model<'a> {
    small: Map<String, Value>,
    vocab: Option<Vocab<'a>>,
    merges: Option<Vec<Merge<'a>>>,
}

struct ModelSeed<'c>(&'c CharBytes);

/// Members of the model read by [`parse_model_head`].
const MODEL_SMALL: [&str; 5] = ["type", "dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"];

impl<'de> DeserializeSeed<'de> for ModelSeed<'_> {
    type Value = Model<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Model<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ModelSeed<'_> {
    type Value = Model<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the model object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Model<'de>, A::Error> {
        let mut m = Model { small: Map::new(), vocab: None, merges: None };
        while let Some(CowStr(key)) = map.next_key()? {
            match key.as_ref() {
                "vocab" => m.vocab = Some(map.next_value_seed(VocabSeed(self.0))?),
                "merges" => m.merges = Some(map.next_value()?),
                k if MODEL_SMALL.contains(&k) => {
                    m.small.insert(key.into_owned(), map.next_value()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

/// The root object: its small members as a `Value` object, and the model.
struct Root<'a> {
    small: Map<String, Value>,
    model: Option<Model<'a>>,
}

/// Members of the root read by [`parse_head`] and [`parse_added`].
const ROOT_SMALL: [&str; 5] = ["truncation", "padding", "normalizer", "pre_tokenizer", "added_tokens"];

struct RootSeed<'c>(&'c CharBytes);

impl<'de> DeserializeSeed<'de> for RootSeed<'_> {
    type Value = Root<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Root<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RootSeed<'_> {
    type Value = Root<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tokenizer.json object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Root<'de>, A::Error> {
        let mut r = Root { small: Map::new(), model: None };
        while let Some(CowStr(key)) = map.next_key()? {
            match key.as_ref() {
                "model" => r.model = Some(map.next_value_seed(ModelSeed(self.0))?),
                k if ROOT_SMALL.contains(&k) => {
                    r.small.insert(key.into_owned(), map.next_value()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

/// Merges at least this many per rayon task when resolving them.
const MERGE_CHUNK: usize = 8192;

/// The tokenizer of `json`, or `None` when the reference loader must decide (see the module doc).
pub(crate) fn fast(json: &str) -> Option<FastBpe> {
    let chars = CharBytes::new();
    let mut de = serde_json::Deserializer::from_str(json);
    let root = RootSeed(&chars).deserialize(&mut de).ok()?;
    de.end().ok()?;
    let small = Value::Object(root.small);
    let (nfc, pattern, prefix) = parse_head(&small).ok()?;
    let model = root.model?;
    let ignore_merges = parse_model_head(&Value::Object(model.small)).ok()?;
    let vocab = model.vocab?;
    let merges_json = model.merges?;

    // Byte string -> id (a repeated entry: the last one, as in a `Value` object).
    let entry = |&(s, e, _): &(u32, u32, u32)| &vocab.arena[s as usize..e as usize];
    let mut ids: FxHashMap<&[u8], u32> = FxHashMap::default();
    ids.reserve(vocab.entries.len());
    let mut repeated = false;
    for e in &vocab.entries {
        repeated |= ids.insert(entry(e), e.2).is_some();
    }
    let mut byte_ids = [0u32; 256];
    for (b, slot) in byte_ids.iter_mut().enumerate() {
        *slot = *ids.get(&[b as u8][..])?;
    }

    // Merges: (a, b, new) ids of each, resolved on all threads, then inserted in rank order.
    // The id of a merge's result, when entry `256 + rank` of the file is that byte string (as in
    // files where the vocabulary lists the bytes, then each merge's result in rank order: GPT-2,
    // Qwen); `None`: look it up. Exact only when no entry is repeated (else a later one wins).
    let guess = |rank: usize, bytes: &[u8]| -> Option<u32> {
        let e = vocab.entries.get(rank + 256).filter(|_| !repeated)?;
        (entry(e) == bytes).then_some(e.2)
    };
    let resolve = |rank: usize, m: &Merge<'_>, buf: &mut Vec<u8>| -> Option<(u32, u32, u32)> {
        let (a, b): (&str, &str) = match m {
            Merge::Joined(s) => {
                let mut parts = s.split(' ');
                let (a, b) = (parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                (a, b)
            }
            Merge::Pair(a, b) => (a, b),
        };
        buf.clear();
        let a_ok = chars.push_bytes(a, buf);
        let la = buf.len();
        if a_ok && chars.push_bytes(b, buf) {
            let new = match guess(rank, buf) {
                Some(id) => id,
                None => *ids.get(&buf[..])?,
            };
            return Some((*ids.get(&buf[..la])?, *ids.get(&buf[la..])?, new));
        }
        // A char outside the byte-level alphabet: look the strings up as strings.
        let id = |t: &str, buf: &mut Vec<u8>| -> Option<u32> {
            buf.clear();
            if chars.push_bytes(t, buf) {
                ids.get(&buf[..]).copied()
            } else {
                vocab.other.get(t).copied()
            }
        };
        Some((id(a, buf)?, id(b, buf)?, id(&format!("{a}{b}"), buf)?))
    };
    let resolved: Vec<(u32, u32, u32)> = merges_json
        .par_chunks(MERGE_CHUNK)
        .enumerate()
        .map(|(k, chunk)| {
            let mut buf = Vec::with_capacity(64);
            let ranks = k * MERGE_CHUNK..;
            ranks.zip(chunk).map(|(rank, m)| resolve(rank, m, &mut buf)).collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<Vec<_>>>>()?
        .concat();
    let mut merges = MergeTable::with_capacity(resolved.len());
    for (rank, &(a, b, new)) in resolved.iter().enumerate() {
        merges.insert(a, b, u32::try_from(rank).ok()?, new);
    }

    let added = parse_added(&small, nfc).ok()?;
    // In file order, not the map's: the BPE of each then reads the arena front to back. A repeated
    // entry is counted once (`assemble` keeps the first of equal byte strings).
    let short_tokens: Vec<&[u8]> =
        vocab.entries.iter().map(entry).filter(|t| (2..=cache::MAX_SHORT).contains(&t.len())).collect();
    let vocab_map = if ignore_merges {
        ids.iter().map(|(&t, &id)| (Box::<[u8]>::from(t), id)).collect()
    } else {
        FxHashMap::default()
    };
    FastBpe::assemble(Parts {
        nfc,
        pattern,
        prefix,
        ignore_merges,
        byte_ids,
        merges,
        short_tokens,
        vocab: vocab_map,
        added,
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a tokenizer holds, in a comparable form (the added-token automata through the
    /// ids they give on a text full of added tokens and near misses).
    #[allow(clippy::type_complexity)]
    fn fingerprint(
        b: &FastBpe,
    ) -> (
        String,
        bool,
        bool,
        Vec<u32>,
        Vec<(u64, u32, u32)>,
        Vec<(u32, u32)>,
        (Vec<u64>, Vec<(u64, u64, u32)>),
        Vec<(Box<[u8]>, u32)>,
        Vec<u32>,
    ) {
        let mut vocab: Vec<_> = b.vocab.iter().map(|(k, &v)| (k.clone(), v)).collect();
        vocab.sort_unstable();
        let text =
            "<|begin_of_text|> café! <think>x</think><|block_start|><|end_of_text|> the <|endoftext|> tha\u{301}n";
        (
            format!("{:?} {:?} {:?}", b.pattern, b.prefix, b.added_tokens),
            b.nfc,
            b.ignore_merges,
            b.byte_ids.to_vec(),
            b.merges.entries(),
            b.byte_pairs.to_vec(),
            b.known.entries(),
            vocab,
            b.encode(text),
        )
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// Where the fast loader takes a file, it builds exactly what the reference loader builds;
    /// where it gives up, the reference decides. `must` says whether the fast one must take it.
    fn agree(json: &str, must: bool, what: &str) {
        let fast = fast(json);
        let reference = FastBpe::from_value(json);
        match (fast, reference) {
            (Some(f), Ok(r)) => assert!(fingerprint(&f) == fingerprint(&r), "{what}: the loaders differ"),
            (Some(_), Err(e)) => panic!("{what}: the fast loader took a file the reference refuses: {e}"),
            (None, _) => assert!(!must, "{what}: the fast loader gave up"),
        }
    }

    type Edit = Box<dyn Fn(&mut Value)>;

    fn edited(json: &str, edit: impl Fn(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(json).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn fast_and_reference_loaders_agree() {
        for name in ["gpt2_style.json", "gpt2_style_prefix.json", "llama3_style.json"] {
            let json = fixture(name);
            let case = |what: &str| format!("{name}: {what}");
            agree(&json, true, &case("as written"));
            // Merges as "a b" strings instead of pairs.
            let joined = edited(&json, |v| {
                let m = v["model"]["merges"].as_array_mut().unwrap();
                for x in m.iter_mut() {
                    *x = Value::String(format!("{} {}", x[0].as_str().unwrap(), x[1].as_str().unwrap()));
                }
            });
            agree(&joined, true, &case("merges as strings"));
            // Every non-ASCII char escaped (owned strings everywhere).
            let escaped: String = json
                .chars()
                .map(|c| if c.is_ascii() { c.to_string() } else { format!("\\u{:04x}", c as u32) })
                .collect();
            assert!(!escaped.is_ascii() || escaped != json);
            agree(&escaped, true, &case("escaped"));
            // A repeated vocabulary entry (the last id counts), merge and member.
            let repeated = json.replacen("\"vocab\": {", "\"vocab\": {\"th\": 7, ", 1);
            assert_ne!(repeated, json);
            agree(&repeated, true, &case("repeated entry"));
            let repeated = json.replacen("\"model\": {", "\"model\": {\"ignore_merges\": true, ", 1);
            agree(&repeated, true, &case("repeated member"));
            let twice = edited(&json, |v| {
                let m = v["model"]["merges"].as_array_mut().unwrap();
                let first = m[0].clone();
                m.push(first);
            });
            agree(&twice, true, &case("repeated merge"));
            // Entries outside the byte-level alphabet, and a merge of them.
            let other = edited(&json, |v| {
                let vocab = v["model"]["vocab"].as_object_mut().unwrap();
                let n = vocab.len() as u64;
                vocab.insert("a b".into(), (n + 100).into());
                vocab.insert("c".into(), vocab["c"].clone());
                vocab.insert("a bc".into(), (n + 101).into());
                v["model"]["merges"].as_array_mut().unwrap().push(serde_json::json!(["a b", "c"]));
            });
            agree(&other, true, &case("non-byte-level entries"));
            // Other model and root members, unknown members.
            let flags = edited(&json, |v| {
                v["model"]["dropout"] = 0.0.into();
                v["model"]["byte_fallback"] = true.into();
                v["model"]["ignore_merges"] = "yes".into();
                v["extra"] = serde_json::json!({"x": [1, 2]});
            });
            agree(&flags, true, &case("flags"));
            // The vocabulary laid out as GPT-2's and Qwen's: the 256 bytes, then each merge's
            // result in rank order (the fast loader's guess of a result's id holds), then the
            // same with the result of merge 0 given again with another id, which must win.
            // (A `Value` object would sort its keys: the vocabulary is written by hand.)
            let v: Value = serde_json::from_str(&json).unwrap();
            let mut tokens: Vec<String> = byte_level_chars().iter().map(|c| c.to_string()).collect();
            let mut merge0 = String::new();
            for m in v["model"]["merges"].as_array().unwrap() {
                let t = format!("{}{}", m[0].as_str().unwrap(), m[1].as_str().unwrap());
                if merge0.is_empty() {
                    merge0.clone_from(&t);
                }
                if !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
            let laid_out = |extra: &str| {
                let entries: Vec<String> =
                    tokens.iter().enumerate().map(|(id, t)| format!("{}:{id}", Value::String(t.clone()))).collect();
                let vocab = format!("{{{}{extra}}}", entries.join(","));
                edited(&json, |v| v["model"]["vocab"] = "@VOCAB@".into()).replacen("\"@VOCAB@\"", &vocab, 1)
            };
            agree(&laid_out(""), true, &case("laid out"));
            let again = laid_out(&format!(",{}:9999", Value::String(merge0.clone())));
            agree(&again, true, &case("laid out, merge 0 repeated"));
            let b = fast(&again).unwrap();
            let (c0, c1) = (merge0.chars().next().unwrap(), merge0.chars().nth(1).unwrap());
            let id = |c: char| tokens.iter().position(|t| *t == c.to_string()).unwrap() as u32;
            assert_eq!(b.merges.get(id(c0), id(c1)), (0, 9999));

            // Files the fast loader may give up on (the reference refuses or decides).
            let broken: Vec<(&str, Edit)> = vec![
                ("float id", Box::new(|v| v["model"]["vocab"]["th"] = 3.0.into())),
                ("negative id", Box::new(|v| v["model"]["vocab"]["th"] = (-3).into())),
                ("huge id", Box::new(|v| v["model"]["vocab"]["th"] = (1u64 << 33).into())),
                ("vocab array", Box::new(|v| v["model"]["vocab"] = serde_json::json!([1]))),
                ("no vocab", Box::new(|v| v["model"].as_object_mut().unwrap().clear())),
                ("model array", Box::new(|v| v["model"] = serde_json::json!([{}, []]))),
                ("no model", Box::new(|v| v["model"] = Value::Null)),
                ("merge of three", Box::new(|v| v["model"]["merges"][0] = serde_json::json!(["t", "h", "e"]))),
                ("merge a b c", Box::new(|v| v["model"]["merges"][0] = "t h e".into())),
                ("merge number", Box::new(|v| v["model"]["merges"][0] = 5.into())),
                ("unknown merge", Box::new(|v| v["model"]["merges"][0] = serde_json::json!(["qqqq", "h"]))),
                ("byte missing", Box::new(|v| drop(v["model"]["vocab"].as_object_mut().unwrap().remove("a")))),
                ("normalizer", Box::new(|v| v["normalizer"] = serde_json::json!({"type": "NFKC"}))),
                ("lstrip", Box::new(|v| v["added_tokens"][0]["lstrip"] = true.into())),
                ("dropout", Box::new(|v| v["model"]["dropout"] = 0.5.into())),
                ("truncation", Box::new(|v| v["truncation"] = serde_json::json!({"max_length": 8}))),
            ];
            for (what, edit) in broken {
                agree(&edited(&json, edit), false, &case(what));
            }
            for text in ["", "[]", "{", "[{}]", "null", "{\"model\": {}}"] {
                agree(text, false, &case(text));
            }
            agree(&format!("{json} x"), false, &case("trailing text"));
        }
    }
}
