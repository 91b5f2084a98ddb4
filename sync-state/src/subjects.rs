//! The subject tree (`/v1/subjects?recursive=true&includeTables=true`):
//! what the sync caches as `metadata/subjects_<lang>.json` and the apply
//! reads back for `meta.subjects` and `meta.table_subjects`.

use serde::{Deserialize, Serialize};

use crate::tableinfo::Lang;
use crate::{DataDir, Error};

fn yes() -> bool {
    true
}

/// One subject: its id, description, sub-subjects and (with
/// `includeTables`) the tables filed directly under it. Unknown fields are
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `3401`.
    pub id: String,
    /// `Befolkning`, `Population`.
    #[serde(default)]
    pub description: String,
    /// Whether StatBank still maintains it.
    #[serde(default = "yes")]
    pub active: bool,
    /// Its sub-subjects, in StatBank's order.
    #[serde(default)]
    pub subjects: Vec<Subject>,
    /// The tables directly under it.
    #[serde(default)]
    pub tables: Vec<SubjectTable>,
}

/// A table as the subject tree lists it (only its id is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTable {
    /// `FOLK1A`.
    pub id: String,
}

/// One subject of a tree, flattened: its parent and its position among
/// its siblings (1, 2, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRow<'a> {
    /// The subject.
    pub subject: &'a Subject,
    /// Its parent's id (`None` at the top).
    pub parent: Option<&'a str>,
    /// 1-based, in StatBank's order.
    pub position: usize,
}

/// Every subject of `tree`, parents before their children.
pub fn flatten(tree: &[Subject]) -> Vec<SubjectRow<'_>> {
    let mut out = Vec::new();
    let mut stack: Vec<(Option<&str>, &[Subject])> = vec![(None, tree)];
    while let Some((parent, level)) = stack.pop() {
        for (i, s) in level.iter().enumerate() {
            out.push(SubjectRow {
                subject: s,
                parent,
                position: i + 1,
            });
        }
        for s in level.iter().rev() {
            stack.push((Some(s.id.as_str()), &s.subjects));
        }
    }
    out
}

/// The cached subject tree in `lang` (`metadata/subjects_<lang>.json`);
/// `Ok(None)` when there is none, [`Error::Corrupt`] naming the file when
/// it does not parse.
pub fn cached_subjects(data: &DataDir, lang: Lang) -> Result<Option<Vec<Subject>>, Error> {
    data.read_json(&data.subjects_key(lang), "cached subject tree")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, subjects: Vec<Subject>, tables: &[&str]) -> Subject {
        Subject {
            id: id.into(),
            description: format!("subject {id}"),
            active: true,
            subjects,
            tables: tables
                .iter()
                .map(|t| SubjectTable { id: (*t).into() })
                .collect(),
        }
    }

    #[test]
    fn a_tree_flattens_parents_first_with_positions() {
        let tree = vec![
            s(
                "1",
                vec![
                    s("3401", vec![s("20021", vec![], &["FOLK1A"])], &[]),
                    s("3407", vec![], &[]),
                ],
                &[],
            ),
            s("2", vec![], &[]),
        ];
        let rows: Vec<(&str, Option<&str>, usize)> = flatten(&tree)
            .iter()
            .map(|r| (r.subject.id.as_str(), r.parent, r.position))
            .collect();
        assert_eq!(
            rows,
            [
                ("1", None, 1),
                ("2", None, 2),
                ("3401", Some("1"), 1),
                ("3407", Some("1"), 2),
                ("20021", Some("3401"), 1),
            ]
        );
    }

    #[test]
    fn real_shapes_decode() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../statbank-client/testdata/");
        for f in ["subjects_en_recursive.json", "subjects_da_top.json"] {
            let text =
                std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
            let tree: Vec<Subject> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(tree.len(), 10, "{f}");
        }
        let text = std::fs::read_to_string(format!("{dir}subjects_da_borgere_with_tables.json"))
            .expect("fixture");
        let borgere: Subject = serde_json::from_str(&text).expect("decodes");
        let rows = flatten(std::slice::from_ref(&borgere));
        let folk = rows
            .iter()
            .find(|r| r.subject.tables.iter().any(|t| t.id == "FOLK1A"))
            .expect("FOLK1A is filed");
        assert_eq!(folk.subject.description, "Befolkningstal");
        assert_eq!(folk.parent, Some("3401"));
    }
}
