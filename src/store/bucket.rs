//! An S3 prefix as a store that prune and check change: its objects listed
//! (ListObjectsV2), read, written and deleted through presigned requests.

use std::ops::Range;
use std::sync::Arc;

use tokio::runtime::Handle;

use super::http::{Client, HttpOptions, Reply};
use super::s3::{self, Method, S3Location};
use super::{Listed, LocalStore, PruneStore, Warn};
use crate::error::{Error, Result};

/// The most bytes of one page of a listing (1,000 keys of a few hundred bytes each).
const LISTING_MAX: u64 = 4 << 20;

pub struct S3Store {
    location: S3Location,
    client: Client,
    runtime: Handle,
    warn: Warn,
}

/// Opens `location` for prune and check: a directory, or `s3://BUCKET/PREFIX`.
pub fn open_prunable(
    location: &str,
    http: &HttpOptions,
    runtime: Handle,
    warn: Warn,
) -> Result<Arc<dyn PruneStore>> {
    if s3::is_s3(location) {
        return Ok(Arc::new(S3Store {
            location: S3Location::parse(location)?,
            client: Client::new(http, Arc::default())?,
            runtime,
            warn,
        }));
    }
    if super::is_remote(location) {
        return Err(Error::Unsupported(format!(
            "{location}: a store over plain HTTP cannot be listed or changed; prune and check its directory, an s3:// prefix or an oci:// repository"
        )));
    }
    Ok(Arc::new(LocalStore::open(
        std::path::Path::new(location),
        false,
    )?))
}

impl S3Store {
    fn ask(
        &self,
        what: &str,
        name: &str,
        method: reqwest::Method,
        url: String,
        body: Option<bytes::Bytes>,
        max: u64,
    ) -> Result<Reply> {
        let warn = self.warn.clone();
        self.runtime
            .block_on(self.client.send(method, &url, &[], body, max, &*warn))
            .map_err(|e| match e {
                Error::Remote { reason, .. } => {
                    self.location.failure(name, format!("{what}: {reason}"))
                }
                e => e,
            })
    }

    /// Every object, or those in the subdirectory `dir`, page after page.
    fn listing(&self, dir: Option<&str>) -> Result<Vec<Listed>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let url = self.location.list_url(dir, token.as_deref());
            let reply = self.ask("listing", "", reqwest::Method::GET, url, None, LISTING_MAX)?;
            if !reply.status.is_success() {
                return Err(self.refused("listing", "", &reply));
            }
            let (page, next) = self
                .location
                .listing(&String::from_utf8_lossy(&reply.body))
                .map_err(|e| self.location.failure("", e))?;
            all.extend(page);
            match next.filter(|n| Some(n) != token.as_ref()) {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn refused(&self, what: &str, name: &str, reply: &Reply) -> Error {
        let body = String::from_utf8_lossy(&reply.body);
        let code = s3::element(&body, "Code").unwrap_or_default();
        self.location.failure(
            name,
            format!("{what}: the server answered {} {code}", reply.status),
        )
    }
}

impl PruneStore for S3Store {
    fn describe(&self) -> String {
        self.location.describe()
    }

    fn list(&self) -> Result<Vec<Listed>> {
        self.listing(None)
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<Listed>> {
        self.listing(Some(dir))
    }

    fn read(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        let url = self.location.url(Method::Get, name);
        let reply = self.ask("reading", name, reqwest::Method::GET, url, None, max_len)?;
        match reply.status.as_u16() {
            200 => Ok(Some(reply.body)),
            404 => Ok(None),
            _ => Err(self.refused("reading", name, &reply)),
        }
    }

    fn read_range(&self, name: &str, range: Range<u64>) -> Result<Option<Vec<u8>>> {
        let url = self.location.url(Method::Get, name);
        let warn = self.warn.clone();
        self.runtime
            .block_on(self.client.get_range(&url, range, &*warn))
            .map_err(s3::explain_refusal)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let url = self.location.url(Method::Put, name);
        let warn = self.warn.clone();
        self.runtime
            .block_on(
                self.client
                    .put(&url, bytes::Bytes::copy_from_slice(bytes), &*warn),
            )
            .map_err(s3::explain_refusal)
    }

    /// A PUT is durable once answered.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let url = self.location.delete_url(name);
        let reply = self.ask(
            "deleting",
            name,
            reqwest::Method::DELETE,
            url,
            None,
            1 << 20,
        )?;
        match reply.status.is_success() || reply.status.as_u16() == 404 {
            true => Ok(()),
            false => Err(self.refused("deleting", name, &reply)),
        }
    }
}
