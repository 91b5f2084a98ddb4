//! The tableinfo in the languages besides Danish (`--languages`): fetched
//! whenever the Danish one is (and again, alone, for a language a visit
//! could not have), checked against the Danish one the partitions were
//! fetched with (same `updated`, variables and value codes), and cached
//! beside it as `metadata/tables_info_raw_<lang>/<ID>.json`. A failure
//! fails the metadata only: it is reported in the table's result, the
//! language stays pending in `state.json`, and the facts go on.

use statbank_client::{error_chain, Lang, TableInfo};
use sync_state::subjects::cached_subjects;
use sync_state::tableinfo::{cached_tableinfo_in, metadata_change, mismatch, MetadataChange};
use sync_state::{RunManifest, SubjectsSection, TableId, TableResult};

use super::Ctx;

/// What fetching a table's other languages came to.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Some language's cached tableinfo changed.
    pub(super) changed: bool,
    /// What changed, per language whose previous version was cached.
    pub(super) changes: Vec<MetadataChange>,
    /// Why some language could not be had (joined).
    pub(super) error: Option<String>,
    /// The languages to fetch again next cycle.
    pub(super) pending: Vec<Lang>,
    /// The tableinfo of the languages fetched that match the Danish one.
    current: Vec<(Lang, TableInfo)>,
}

impl Outcome {
    /// Publishes the table's labels file (`metadata/labels/<ID>.parquet`)
    /// from `da` and the other languages' caches that match it; rewritten
    /// only when its labels changed. A failure is the metadata's.
    pub(super) fn publish_labels(&mut self, ctx: &Ctx<'_>, table: &TableId, da: &TableInfo) {
        // The languages not fetched just now, from their caches.
        let cached: Vec<(Lang, TableInfo)> = ctx
            .opts
            .languages
            .others()
            .iter()
            .filter(|l| !self.current.iter().any(|(c, _)| c == *l))
            .filter_map(|&l| {
                let info = cached_tableinfo_in(&ctx.dir, table, l).ok().flatten()?;
                mismatch(da, &info).is_none().then_some((l, info))
            })
            .collect();
        let mut infos = vec![(Lang::Da, da)];
        infos.extend(self.current.iter().chain(&cached).map(|(l, i)| (*l, i)));
        match ctx.store.publish_labels(table, &infos) {
            Ok(written) => {
                if written {
                    tracing::debug!(table = %table, "labels published");
                }
            }
            Err(e) => {
                let msg = format!("labels of {table}: {}", error_chain(&e));
                tracing::warn!(table = %table, error = %msg, "metadata: labels not published; the facts are unaffected");
                self.error = Some(match self.error.take() {
                    Some(prev) => sync_state::shorten_error(format!("{prev}; {msg}")),
                    None => msg,
                });
            }
        }
    }

    /// Records the outcome in the table's result.
    pub(super) fn record(&self, r: &mut TableResult) {
        r.metadata_changed |= self.changed;
        r.metadata_changes.extend(self.changes.iter().cloned());
        if self.error.is_some() {
            r.metadata_error.clone_from(&self.error);
        }
    }
}

/// Fetches `table`'s tableinfo in each of `langs`, checks it against `da`
/// and caches it when its content changed; then records in the state
/// which languages are still pending.
pub(super) async fn fetch(
    ctx: &Ctx<'_>,
    table: &TableId,
    da: &TableInfo,
    langs: &[Lang],
) -> Outcome {
    let mut out = Outcome::default();
    let mut errors = Vec::new();
    for &lang in langs {
        match fetch_one(ctx, table, da, lang).await {
            Ok((changed, info)) => {
                out.changed |= changed.is_some();
                out.changes.extend(changed.flatten());
                out.current.push((lang, info));
            }
            Err(e) => {
                tracing::warn!(table = %table, %lang, error = %e, "metadata: tableinfo not cached; the facts are unaffected, retried next cycle");
                errors.push(e);
                out.pending.push(lang);
            }
        }
    }
    if !errors.is_empty() {
        out.error = Some(sync_state::shorten_error(errors.join("; ")));
    }
    // Saved only when it changes: a state save per table is what a
    // bootstrap of thousands of tables must not double.
    let before = ctx
        .entry(table)
        .map(|e| e.metadata_pending)
        .unwrap_or_default();
    if before != out.pending {
        let pending = out.pending.clone();
        if let Err(e) = ctx.update_state(table, |s| s.metadata_pending = pending) {
            tracing::error!(table = %table, error = %error_chain(&e), "cannot save state");
        }
    }
    out
}

/// `langs` of `table` fetched against its cached Danish tableinfo, and its
/// labels file published, for a table this cycle does not sync: the retry
/// of a pending language, or `--refresh-metadata` (no data either way);
/// `None` when `langs` is empty or there is no Danish cache to check
/// against.
pub(super) async fn retry(ctx: &Ctx<'_>, table: &TableId, langs: &[Lang]) -> Option<Outcome> {
    if langs.is_empty() {
        return None;
    }
    let da = match sync_state::tableinfo::cached_tableinfo(&ctx.dir, table) {
        Ok(Some(da)) => da,
        Ok(None) => return None,
        Err(e) => {
            let msg = format!(
                "the cached Danish tableinfo cannot be read: {}",
                error_chain(&e)
            );
            return Some(Outcome {
                error: Some(msg),
                pending: langs.to_vec(),
                ..Outcome::default()
            });
        }
    };
    let mut out = fetch(ctx, table, &da, langs).await;
    out.publish_labels(ctx, table, &da);
    Some(out)
}

/// One language: its tableinfo, and, when its cache was written (its
/// content changed), what changed from the version cached before.
async fn fetch_one(
    ctx: &Ctx<'_>,
    table: &TableId,
    da: &TableInfo,
    lang: Lang,
) -> Result<(Option<Option<MetadataChange>>, TableInfo), String> {
    let what = || format!("tableinfo of {table} in {lang}");
    let (info, raw) = ctx
        .client
        .table_info_in(table, lang)
        .await
        .map_err(|e| format!("{}: {}", what(), error_chain(&e)))?;
    if let Some(why) = mismatch(da, &info) {
        return Err(format!("{} does not match the Danish one: {why}", what()));
    }
    let cached = cached_tableinfo_in(&ctx.dir, table, lang).ok().flatten();
    let key = ctx.dir.metadata_file_key_in(table, lang);
    let written = cache_if_changed(ctx, &key, cached.as_ref(), &info, &raw)
        .map_err(|e| format!("{}: caching it: {e}", what()))?;
    let change = written.then(|| {
        cached
            .as_ref()
            .and_then(|old| metadata_change(lang, old, &info))
    });
    Ok((change, info))
}

/// Writes `raw` (the answer `fresh` was decoded from) at `key` unless the
/// cache there already holds the same content; whether it was written.
fn cache_if_changed<T: PartialEq>(
    ctx: &Ctx<'_>,
    key: &str,
    cached: Option<&T>,
    fresh: &T,
    raw: &[u8],
) -> Result<bool, String> {
    if cached == Some(fresh) {
        return Ok(false);
    }
    ctx.dir
        .storage()
        .put(key, raw)
        .map_err(|e| error_chain(&e))?;
    Ok(true)
}

/// When a cycle fetches the subject tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubjectsWhen {
    /// When some table's metadata changed, or the last fetch failed.
    Changed,
    /// In any case (`--refresh-metadata`).
    Always,
}

/// The subject tree, once per language, when `when` says so: cached as
/// `metadata/subjects_<lang>.json` when its content changed, and recorded
/// in the manifest. A failure fails only the subjects: they are fetched
/// again next cycle.
pub(super) async fn fetch_subjects(ctx: &Ctx<'_>, manifest: &mut RunManifest, when: SubjectsWhen) {
    let pending = ctx
        .state
        .lock()
        .map(|s| s.subjects_pending)
        .unwrap_or(false);
    let changed = manifest.tables.values().any(|r| r.metadata_changed);
    if when == SubjectsWhen::Changed && !changed && !pending {
        return;
    }
    let mut section = SubjectsSection::default();
    let mut errors = Vec::new();
    for &lang in ctx.opts.languages.all() {
        match fetch_subjects_in(ctx, lang).await {
            Ok(c) => {
                section.changed |= c;
                section.fetched.push(lang);
            }
            Err(e) => {
                tracing::warn!(%lang, error = %e, "metadata: subject tree not cached; retried next cycle");
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        section.error = Some(sync_state::shorten_error(errors.join("; ")));
    }
    if let Ok(mut s) = ctx.state.lock() {
        s.subjects_pending = section.error.is_some();
    }
    manifest.subjects = Some(section);
}

/// One language's tree: `Ok(true)` when its cache was written.
async fn fetch_subjects_in(ctx: &Ctx<'_>, lang: Lang) -> Result<bool, String> {
    let (tree, raw) = ctx
        .client
        .subjects_in(lang)
        .await
        .map_err(|e| format!("subject tree in {lang}: {}", error_chain(&e)))?;
    let cached = cached_subjects(&ctx.dir, lang).ok().flatten();
    cache_if_changed(
        ctx,
        &ctx.dir.subjects_key(lang),
        cached.as_ref(),
        &tree,
        &raw,
    )
    .map_err(|e| format!("subject tree in {lang}: caching it: {e}"))
}
