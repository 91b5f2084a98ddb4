//! The mutation engine of the fuzz targets (proptest): byte-level edits of
//! a seed (bit flips, overwritten bytes, insertions of bytes and of JSON
//! tokens, deep nesting, deletions, truncations, splices) and structure-aware
//! edits of a seed's JSON tree (hostile strings, values of other types,
//! removed, added and repeated nodes).
//!
//! Used by this crate's fuzz targets (`state.json`, run manifests, the
//! overrides file) and by `statbank-client`'s (catalog, tableinfo, error
//! bodies), each with its own seeds, JSON tokens and hostile values. Other
//! crates get it through a dev-dependency with the `fuzz-support` feature;
//! it is never compiled in normal builds.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::{BoxedStrategy, Union};
use serde_json::Value;

/// One byte-level edit of a seed. Positions are [`Index`]es, resolved
/// against the buffer's length when the edit is applied, so every edit
/// applies to any buffer (to the end of an empty one too).
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flips one bit (0–7) of a byte.
    FlipBit(Index, u8),
    /// Overwrites a byte.
    SetByte(Index, u8),
    /// Inserts bytes.
    InsertBytes(Index, Vec<u8>),
    /// Inserts one of the [`Mutator`]'s tokens (the second index picks it).
    InsertToken(Index, Index),
    /// Inserts `n` copies of `[` (`true`) or `{` (`false`): deep nesting.
    Nest(Index, bool, usize),
    /// Deletes up to `n` bytes.
    Delete(Index, usize),
    /// Cuts the buffer off.
    Truncate(Index),
    /// Copies up to `n` bytes from the first place to the second.
    Splice(Index, Index, usize),
}

/// Draws and applies [`Mutation`]s.
#[derive(Debug, Clone, Copy)]
pub struct Mutator {
    /// JSON fragments likely to reach interesting decoder states, inserted
    /// by [`Mutation::InsertToken`].
    pub tokens: &'static [&'static [u8]],
    /// Whether [`Mutation::SetByte`] is drawn too.
    pub set_byte: bool,
}

impl Mutator {
    /// One mutation: bit flips and token insertions most often, deep
    /// nesting and truncation least.
    pub fn arb_mutation(self) -> BoxedStrategy<Mutation> {
        let mut arms: Vec<(u32, BoxedStrategy<Mutation>)> = vec![(
            4,
            (any::<Index>(), 0u8..8)
                .prop_map(|(i, b)| Mutation::FlipBit(i, b))
                .boxed(),
        )];
        if self.set_byte {
            arms.push((
                2,
                (any::<Index>(), any::<u8>())
                    .prop_map(|(i, b)| Mutation::SetByte(i, b))
                    .boxed(),
            ));
        }
        arms.extend([
            (
                2,
                (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
                    .prop_map(|(i, b)| Mutation::InsertBytes(i, b))
                    .boxed(),
            ),
            (
                4,
                (any::<Index>(), any::<Index>())
                    .prop_map(|(i, t)| Mutation::InsertToken(i, t))
                    .boxed(),
            ),
            (
                1,
                (
                    any::<Index>(),
                    any::<bool>(),
                    prop_oneof![1usize..200, 200usize..5_000],
                )
                    .prop_map(|(i, arr, n)| Mutation::Nest(i, arr, n))
                    .boxed(),
            ),
            (
                2,
                (any::<Index>(), 1usize..64)
                    .prop_map(|(i, n)| Mutation::Delete(i, n))
                    .boxed(),
            ),
            (1, any::<Index>().prop_map(Mutation::Truncate).boxed()),
            (
                2,
                (any::<Index>(), any::<Index>(), 1usize..256)
                    .prop_map(|(a, b, n)| Mutation::Splice(a, b, n))
                    .boxed(),
            ),
        ]);
        Union::new_weighted(arms).boxed()
    }

    /// `seed` with `mutations` applied in order.
    pub fn mutate(self, seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for m in mutations {
            match m {
                Mutation::FlipBit(i, bit) => {
                    if !b.is_empty() {
                        let p = i.index(b.len());
                        b[p] ^= 1 << bit;
                    }
                }
                Mutation::SetByte(i, v) => {
                    if !b.is_empty() {
                        let p = i.index(b.len());
                        b[p] = *v;
                    }
                }
                Mutation::InsertBytes(i, bytes) => {
                    let p = i.index(b.len() + 1);
                    b.splice(p..p, bytes.iter().copied());
                }
                Mutation::InsertToken(i, t) => {
                    let p = i.index(b.len() + 1);
                    let token = self.tokens[t.index(self.tokens.len())];
                    b.splice(p..p, token.iter().copied());
                }
                Mutation::Nest(i, arr, n) => {
                    let p = i.index(b.len() + 1);
                    let c = if *arr { b'[' } else { b'{' };
                    b.splice(p..p, std::iter::repeat_n(c, *n));
                }
                Mutation::Delete(i, n) => {
                    let p = i.index(b.len() + 1);
                    let end = (p + n).min(b.len());
                    b.drain(p..end);
                }
                Mutation::Truncate(i) => {
                    let p = i.index(b.len() + 1);
                    b.truncate(p);
                }
                Mutation::Splice(from, to, n) => {
                    if !b.is_empty() {
                        let s = from.index(b.len());
                        let e = (s + n).min(b.len());
                        let chunk = b[s..e].to_vec();
                        let p = to.index(b.len() + 1);
                        b.splice(p..p, chunk);
                    }
                }
            }
        }
        b
    }
}

/// One structure-aware edit of a seed's JSON tree, at a node picked by the
/// index among the nodes below the root (depth first): the result stays
/// JSON, so decoding gets past the syntax into the records' fields.
#[derive(Debug, Clone)]
pub enum TreeEdit {
    /// Replaces a string node (picked among the strings) by another string.
    SetString(Index, String),
    /// Replaces a node by a value of another type.
    SetOther(Index, Value),
    /// Removes a node from its object or array.
    Remove(Index),
    /// Adds a member to an object node (picked among the objects, the root
    /// included).
    AddMember(Index, String, Value),
    /// Appends `n` copies of one of a node's elements (arrays only).
    Repeat(Index, Index, usize),
}

/// The edit by which [`arb_tree_edit`] grows a tree.
#[derive(Debug, Clone, Copy)]
pub enum Growth {
    /// [`TreeEdit::AddMember`]: new members (records with open key sets).
    AddMember,
    /// [`TreeEdit::Repeat`]: repeated array elements (long lists).
    Repeat,
}

/// Strings for [`TreeEdit::SetString`]: short id-like ones, arbitrary ones
/// and hostile ones (empty, `.`, `..`, a path, a NUL, a long one), plus the
/// caller's `extra` arms (weight, strategy).
pub fn hostile_string(extra: Vec<(u32, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let mut arms: Vec<(u32, BoxedStrategy<String>)> = vec![
        (3, "[0-9A-Za-zÆØÅæøå /:._-]{0,12}".boxed()),
        (2, any::<String>().boxed()),
        (1, Just(String::new()).boxed()),
        (1, Just(".".to_string()).boxed()),
        (1, Just("..".to_string()).boxed()),
        (1, Just("../../etc/passwd".to_string()).boxed()),
        (1, Just("a\u{0}b".to_string()).boxed()),
        (1, "\\PC{240,300}".boxed()),
    ];
    arms.extend(extra);
    Union::new_weighted(arms).boxed()
}

/// Values for [`TreeEdit::SetOther`]: null, a boolean, numbers at the
/// edges, empty containers, plus the caller's `extra` values, all equally
/// likely.
pub fn other_value(extra: Vec<Value>) -> BoxedStrategy<Value> {
    let mut values = vec![
        Value::Null,
        serde_json::json!(true),
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(u64::MAX),
        serde_json::json!(1.5e300),
        serde_json::json!([]),
        serde_json::json!({}),
    ];
    values.extend(extra);
    proptest::sample::select(values).boxed()
}

/// One tree edit, with `strings` for new strings and member names, `others`
/// for values of other types, and `growth` for the edit that adds nodes.
pub fn arb_tree_edit(
    strings: BoxedStrategy<String>,
    others: BoxedStrategy<Value>,
    growth: Growth,
) -> BoxedStrategy<TreeEdit> {
    let grow = match growth {
        Growth::AddMember => (any::<Index>(), strings.clone(), others.clone())
            .prop_map(|(i, k, v)| TreeEdit::AddMember(i, k, v))
            .boxed(),
        Growth::Repeat => (
            any::<Index>(),
            any::<Index>(),
            prop_oneof![1usize..10, 10usize..2_000],
        )
            .prop_map(|(i, j, n)| TreeEdit::Repeat(i, j, n))
            .boxed(),
    };
    prop_oneof![
        6 => (any::<Index>(), strings).prop_map(|(i, s)| TreeEdit::SetString(i, s)),
        1 => (any::<Index>(), others).prop_map(|(i, v)| TreeEdit::SetOther(i, v)),
        1 => any::<Index>().prop_map(TreeEdit::Remove),
        1 => grow,
    ]
    .boxed()
}

/// What a node is, for picking among the nodes of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    String,
    Object,
    Other,
}

/// JSON pointers of every node (the root is `""`), depth first, with the
/// node's kind.
fn node_pointers(v: &Value, at: &str, out: &mut Vec<(String, NodeKind)>) {
    let kind = |v: &Value| match v {
        Value::String(_) => NodeKind::String,
        Value::Object(_) => NodeKind::Object,
        _ => NodeKind::Other,
    };
    if at.is_empty() {
        out.push((String::new(), kind(v)));
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push((p.clone(), kind(child)));
                node_pointers(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push((p.clone(), kind(child)));
                node_pointers(child, &p, out);
            }
        }
        _ => {}
    }
}

/// `seed` (JSON) with `edits` applied in order, encoded compactly. An edit
/// with no node of its kind to apply to does nothing.
pub fn edit_tree(seed: &[u8], edits: &[TreeEdit]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(seed).expect("seed is JSON");
    for e in edits {
        let mut nodes = Vec::new();
        node_pointers(&v, "", &mut nodes);
        // Nodes of one kind (any kind: `None`); the root only as an object.
        let of_kind = |k: Option<NodeKind>| -> Vec<String> {
            nodes
                .iter()
                .filter(|(p, kind)| {
                    k.is_none_or(|k| *kind == k) && (k == Some(NodeKind::Object) || !p.is_empty())
                })
                .map(|(p, _)| p.clone())
                .collect()
        };
        let pick = |ptrs: Vec<String>, i: &Index| -> Option<String> {
            (!ptrs.is_empty()).then(|| ptrs[i.index(ptrs.len())].clone())
        };
        match e {
            TreeEdit::SetString(i, s) => {
                if let Some(p) = pick(of_kind(Some(NodeKind::String)), i) {
                    if let Some(n) = v.pointer_mut(&p) {
                        *n = Value::String(s.clone());
                    }
                }
            }
            TreeEdit::SetOther(i, o) => {
                if let Some(p) = pick(of_kind(None), i) {
                    if let Some(n) = v.pointer_mut(&p) {
                        *n = o.clone();
                    }
                }
            }
            TreeEdit::Remove(i) => {
                if let Some(p) = pick(of_kind(None), i) {
                    let (parent, last) = p.rsplit_once('/').expect("pointer has a parent");
                    match v.pointer_mut(parent) {
                        Some(Value::Object(m)) => {
                            m.shift_remove(&last.replace("~1", "/").replace("~0", "~"));
                        }
                        Some(Value::Array(a)) => {
                            if let Some(k) = last.parse::<usize>().ok().filter(|k| *k < a.len()) {
                                a.remove(k);
                            }
                        }
                        _ => {}
                    }
                }
            }
            TreeEdit::AddMember(i, k, o) => {
                if let Some(p) = pick(of_kind(Some(NodeKind::Object)), i) {
                    if let Some(Value::Object(m)) = v.pointer_mut(&p) {
                        m.insert(k.clone(), o.clone());
                    }
                }
            }
            TreeEdit::Repeat(i, j, n) => {
                if let Some(p) = pick(of_kind(None), i) {
                    if let Some(Value::Array(a)) = v.pointer_mut(&p) {
                        if !a.is_empty() {
                            let el = a[j.index(a.len())].clone();
                            a.extend(std::iter::repeat_n(el, *n));
                        }
                    }
                }
            }
        }
    }
    serde_json::to_vec(&v).expect("encodes")
}
