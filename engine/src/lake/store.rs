//! Registers `s3://` with delta-rs, backed by `object_store`'s S3 client from `fhirlake-connectors`.
//!
//! delta-rs ships S3 support in `deltalake-aws`, which pulls in the AWS SDK (DynamoDB locking) — a
//! large build for a feature we do not need: S3 now supports conditional writes, and delta-rs'
//! default log store commits with put-if-absent. So fhirlake registers the same object store it
//! reads sources with, and the default log store, for the `s3` scheme.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use fhirlake_connectors::StoreOptions;
use url::Url;

#[derive(Debug, Default)]
struct S3Factory;

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let options = StoreOptions {
            options: config.raw().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        fhirlake_connectors::object_store_for_url(url, &options)
            .map_err(|e| DeltaTableError::InvalidTableLocation(e.to_string()))
    }
}

impl LogStoreFactory for S3Factory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Makes delta-rs understand the lake's URL scheme (a no-op for `file://`).
pub(crate) fn register_delta_handlers(url: &Url) {
    static S3: Once = Once::new();
    if url.scheme() == "s3" {
        S3.call_once(|| {
            let scheme = Url::parse("s3://").expect("static URL parses");
            object_store_factories().insert(scheme.clone(), Arc::new(S3Factory));
            logstore_factories().insert(scheme, Arc::new(S3Factory));
        });
    }
}
