//! The object store holding the master data: a local directory or S3.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::ParquetObjectWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use url::Url;

use crate::schema;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("master data location {location:?}: {message}")]
    Location { location: String, message: String },
    #[error("{path}: {source}")]
    Store { path: String, source: object_store::Error },
    #[error("writing {path}: {source}")]
    Parquet { path: String, source: ParquetError },
    #[error("building readings: {0}")]
    Arrow(#[from] ArrowError),
}

/// Where the master data lives: the store, the root inside it, and the URL
/// that query engines register the store under.
#[derive(Clone, Debug)]
pub struct MasterStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    base_url: Url,
    location: String,
}

impl MasterStore {
    /// Opens `s3://bucket/prefix` (endpoint, region and credentials from the
    /// standard `AWS_*` variables: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`) or a local directory (a path or
    /// `file://` URL), which is created when missing.
    pub fn open(location: &str) -> Result<Self, MasterError> {
        let invalid = |message: String| MasterError::Location { location: location.to_owned(), message };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket named".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                builder = builder.with_region("us-east-1");
            }
            let store = builder.build().map_err(|err| invalid(err.to_string()))?;
            let base_url = Url::parse(&format!("s3://{bucket}")).map_err(|err| invalid(err.to_string()))?;
            return Ok(Self {
                store: Arc::new(store),
                root: Path::from(prefix),
                base_url,
                location: location.to_owned(),
            });
        }
        let directory = location.strip_prefix("file://").unwrap_or(location);
        if directory.contains("://") {
            return Err(invalid("expected a directory, file:// or s3:// URL".into()));
        }
        std::fs::create_dir_all(directory).map_err(|err| invalid(format!("creating the directory: {err}")))?;
        let absolute = std::fs::canonicalize(directory).map_err(|err| invalid(err.to_string()))?;
        let root = Path::from_absolute_path(&absolute).map_err(|err| invalid(err.to_string()))?;
        let base_url = Url::parse("file:///").map_err(|err| invalid(err.to_string()))?;
        Ok(Self { store: Arc::new(LocalFileSystem::new()), root, base_url, location: location.to_owned() })
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL to register [`Self::object_store`] under (`s3://bucket` or `file:///`).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// What the user named, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A path relative to the root, as a path in the store.
    pub fn path(&self, relative: &Path) -> Path {
        self.root.parts().chain(relative.parts()).collect()
    }

    /// The URL of a path in the store (not relative to the root).
    pub fn object_url(&self, path: &Path) -> String {
        format!("{}/{}", self.base_url.as_str().trim_end_matches('/'), path.as_ref())
    }

    /// Writes `bytes` to a path relative to the root, replacing what was there.
    pub async fn put(&self, relative: &Path, bytes: bytes::Bytes) -> Result<(), MasterError> {
        let path = self.path(relative);
        self.store.put(&path, bytes.into()).await.map(drop).map_err(|source| MasterError::Store { path: path.to_string(), source })
    }

    /// Writes `bytes` to a path relative to the root unless something is
    /// there already (a conditional create, atomic on every store): `None`
    /// when written, else what was there.
    pub async fn put_if_absent(&self, relative: &Path, bytes: bytes::Bytes) -> Result<Option<bytes::Bytes>, MasterError> {
        let path = self.path(relative);
        let options = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, bytes.into(), options).await {
            Ok(_) => Ok(None),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                let existing = self.get(relative).await?;
                Ok(Some(existing.unwrap_or_default()))
            }
            Err(source) => Err(MasterError::Store { path: path.to_string(), source }),
        }
    }

    /// Reads a path relative to the root; `None` when there is nothing.
    pub async fn get(&self, relative: &Path) -> Result<Option<bytes::Bytes>, MasterError> {
        let path = self.path(relative);
        let store_error = |source| MasterError::Store { path: path.to_string(), source };
        match self.store.get(&path).await {
            Ok(found) => found.bytes().await.map(Some).map_err(store_error),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(store_error(err)),
        }
    }

    /// Starts a Parquet file at a path relative to the root; it appears once closed.
    pub fn create(&self, relative: &Path) -> Result<ParquetFile, MasterError> {
        let path = self.path(relative);
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        let upload = ParquetObjectWriter::new(self.store.clone(), path.clone());
        match AsyncArrowWriter::try_new(upload, schema(), Some(properties)) {
            Ok(writer) => Ok(ParquetFile { store: self.store.clone(), path, writer, rows: 0 }),
            Err(source) => Err(MasterError::Parquet { path: path.to_string(), source }),
        }
    }
}

/// What a closed file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFile {
    pub path: Path,
    pub rows: u64,
    pub bytes: u64,
}

/// A Parquet file being written; uploaded in parts, complete only once closed.
pub struct ParquetFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    writer: AsyncArrowWriter<ParquetObjectWriter>,
    rows: u64,
}

impl ParquetFile {
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), MasterError> {
        match self.writer.write(batch).await {
            Ok(()) => {
                self.rows += batch.num_rows() as u64;
                Ok(())
            }
            Err(source) => Err(MasterError::Parquet { path: self.path.to_string(), source }),
        }
    }

    /// Finishes the file and completes its upload.
    pub async fn close(self) -> Result<WrittenFile, MasterError> {
        if let Err(source) = self.writer.close().await {
            return Err(MasterError::Parquet { path: self.path.to_string(), source });
        }
        match self.store.head(&self.path).await {
            Ok(meta) => Ok(WrittenFile { path: self.path, rows: self.rows, bytes: meta.size }),
            Err(source) => Err(MasterError::Store { path: self.path.to_string(), source }),
        }
    }
}
