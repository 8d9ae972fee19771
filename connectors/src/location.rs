//! Where a source file lives: a local path or an object in an object store (`file://`, `s3://`), and the
//! construction of object stores from URLs.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::error::{Error, Result};

/// A file to read: a local path, or an object in a store.
#[derive(Clone)]
pub enum Location {
    /// A local file, by the path as given (or as found while walking a directory).
    Local(PathBuf),
    /// An object: the store (rooted at the bucket or filesystem root), its full URL, and its path in the store.
    Object {
        store: Arc<dyn ObjectStore>,
        url: Url,
        path: ObjectPath,
    },
}

impl Location {
    /// The last path segment (file or object name), if any.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Location::Object { path, .. } => path.filename().map(str::to_owned),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Object { url, .. } => f.write_str(url.as_str()),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Extra object-store configuration, as `object_store` config keys and values, e.g.
/// `("aws_endpoint", "http://127.0.0.1:9000")`, `("aws_allow_http", "true")`.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub options: Vec<(String, String)>,
}

/// Returns a store whose root is the bucket (`s3://`) or the filesystem root (`file://`), and the path of
/// `url` inside it.
///
/// `s3`: [`AmazonS3Builder::from_env`] (reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...), the URL, then each [`StoreOptions`] pair. Conditional put stays at
/// the `object_store` default (Delta commits need put-if-absent). `file`: [`LocalFileSystem::new`].
pub fn object_store_for_url(
    url: &Url,
    opts: &StoreOptions,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let path = ObjectPath::from_url_path(url.path())
        .map_err(|e| Error::invalid(url, format!("invalid object path: {e}")))?;
    match url.scheme() {
        "s3" | "s3a" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(Error::invalid(url, "s3 URL has no bucket"));
            }
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
            for (key, value) in &opts.options {
                let key: AmazonS3ConfigKey =
                    key.parse().map_err(|e| Error::object_store(url, e))?;
                builder = builder.with_config(key, value);
            }
            let store = builder.build().map_err(|e| Error::object_store(url, e))?;
            Ok((Arc::new(store), path))
        }
        "file" => {
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(Error::invalid(url, "file URL with a remote host"));
            }
            Ok((Arc::new(LocalFileSystem::new()), path))
        }
        other => Err(Error::invalid(
            url,
            format!("unsupported URL scheme {other:?} (supported: file, s3)"),
        )),
    }
}

/// The URL of `path` in the store `base` was opened from (same scheme and bucket).
pub(crate) fn url_for_path(base: &Url, path: &ObjectPath) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.set_path(&format!("/{path}"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_map_to_the_filesystem_root() {
        let url = Url::parse("file:///tmp/some%20dir/a.ndjson").unwrap();
        let (_store, path) = object_store_for_url(&url, &StoreOptions::default()).unwrap();
        assert_eq!(path.as_ref(), "tmp/some dir/a.ndjson");
        assert_eq!(url_for_path(&url, &path).as_str(), url.as_str());
    }

    #[test]
    fn s3_urls_map_to_the_bucket() {
        let url = Url::parse("s3://bucket/landing/2024/").unwrap();
        let opts = StoreOptions {
            options: vec![
                ("aws_endpoint".into(), "http://127.0.0.1:9000".into()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
        };
        let (store, path) = object_store_for_url(&url, &opts).unwrap();
        assert_eq!(path.as_ref(), "landing/2024");
        assert!(store.to_string().contains("bucket"));
        let loc = Location::Object {
            store,
            url: url_for_path(&url, &path.clone().join("x.ndjson")),
            path: path.clone().join("x.ndjson"),
        };
        assert_eq!(loc.to_string(), "s3://bucket/landing/2024/x.ndjson");
        assert_eq!(format!("{loc:?}"), loc.to_string());
    }

    #[test]
    fn bad_urls_are_invalid_sources() {
        let opts = StoreOptions::default();
        let err = object_store_for_url(&Url::parse("http://x/y").unwrap(), &opts).err();
        assert!(matches!(err, Some(Error::InvalidSource { .. })));
        let opts = StoreOptions {
            options: vec![("no_such_key".into(), "1".into())],
        };
        let err = object_store_for_url(&Url::parse("s3://b/y").unwrap(), &opts).err();
        assert!(err.is_some());
    }
}
