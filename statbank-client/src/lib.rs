//! A typed, polite async client for Statistics Denmark's StatBank API
//! (`https://api.statbank.dk/v1`): the catalog, table metadata and streamed
//! BULK data parsed into Arrow record batches, with retries, rate limiting
//! and typed API errors. With the `emulator` feature it also contains an
//! HTTP server that behaves like the API, for tests and demos.
//!
//! ```no_run
//! use statbank_client::{BulkParser, DataRequest, StatbankClient, TableInfoExt, TablesRequest};
//! use sync_state::TableId;
//!
//! # async fn demo() -> Result<(), statbank_client::Error> {
//! let client = StatbankClient::new("https://api.statbank.dk/v1")?;
//! let catalog = client.tables(&TablesRequest::default()).await?;
//! println!("{} tables", catalog.len());
//!
//! let table = TableId::new("FOLK1A").expect("valid id");
//! let (info, _raw) = client.table_info(&table).await?;
//! let tids = info.tids().expect("FOLK1A has a time variable");
//! let req = DataRequest::all_values_for_periods(table, &info, &tids[tids.len() - 1..]);
//! let mut body = client.data_bulk(&req).await?;
//! let mut parser = body.parser();
//! let mut batches = Vec::new();
//! while let Some(chunk) = body.next_chunk().await? {
//!     parser.push(&chunk, &mut batches)?;
//!     batches.clear(); // hand them on instead: memory stays flat
//! }
//! let summary = parser.finish(&mut batches)?;
//! println!("{} rows", summary.rows);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! One [`Error`] for everything: requests, API answers, decoding, the BULK
//! parser and a tableinfo's periods, each naming the endpoint or the table.
//!
//! # Crate features
//!
//! - `emulator`: [`emulator`], an axum server that behaves like the API
//!   (the real response shapes, deterministic data, live changes, injected
//!   faults), for tests, demos and benches. Off by default: a service that
//!   embeds the client compiles no HTTP server.
#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod bulk;
mod client;
mod error;
#[cfg(test)]
mod fuzz;
mod model;

#[cfg(feature = "emulator")]
pub mod emulator;

pub use bulk::{
    write_bulk, BulkParser, BulkSummary, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ROWS, MAX_COLUMNS,
    MAX_COLUMN_NAME, MAX_FIELD_BYTES, VALUE_COLUMN,
};
pub use client::{
    BulkResponse, BulkTimeout, ClientBuilder, ClientConfig, ClientStats, StatbankClient,
    DEFAULT_BASE_URL, MAX_JSON_BYTES,
};
pub use error::{Endpoint, Error};
pub use model::{
    Catalog, CatalogEntry, Contact, DataRequest, Documentation, Footnote, Lang, RejectedEntry,
    TableInfo, TableInfoExt, TablesRequest, ValuePresentation, Variable, VariableSelection,
    VariableValue, MAX_PERIODS,
};
pub use sync_state::{error_chain, TableId, Tid};
