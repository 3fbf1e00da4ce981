//! S3-compatible object stores (`s3://BUCKET/PREFIX`): a store directory's layout under
//! the prefix, so a public bucket, or a CDN in front of one, is also an ordinary
//! `https://` store. Each request is presigned with SigV4 (the rusty-s3 crate) just before
//! it is sent by the HTTP client every remote store uses, so ranges, retries, bounds and
//! multi-range learning work as over plain HTTP (S3 answers several ranges with the whole
//! object: the client cuts it off and asks that host one range at a time).
//!
//! Where the bucket is and who asks come from the environment, as the AWS tools read it:
//! `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (a MinIO, Ceph RGW or other endpoint,
//! addressed path-style), else `https://s3.<region>.amazonaws.com` (virtual-hosted);
//! `AWS_REGION` or `AWS_DEFAULT_REGION` (default `us-east-1`); `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, else the profile `AWS_PROFILE`
//! (default `default`) of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, or
//! `~/.aws/credentials`); without either, requests go unsigned, as a public bucket takes
//! them. Instance-metadata and web-identity credentials are not read.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::error::{Error, Result};

/// How long a presigned URL stays good. URLs are signed as requests are made, so this
/// only has to outlast one request and its retries.
const PRESIGNED_FOR: Duration = Duration::from_secs(3600);

/// The most of a shared credentials file read.
const CREDENTIALS_MAX: u64 = 1 << 20;

pub fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

/// What a presigned URL lets its holder do.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Get,
    Head,
    Put,
}

/// A bucket and a prefix in it, with the credentials that reach them.
pub struct S3Location {
    bucket: Bucket,
    credentials: Option<Credentials>,
    prefix: String,
}

impl S3Location {
    /// `s3://BUCKET[/PREFIX]`, configured from the environment (see the module's
    /// documentation).
    pub fn parse(location: &str) -> Result<S3Location> {
        let invalid = |why: &str| Error::Invalid(format!("{location}: {why}"));
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("not an s3:// location"))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(invalid("names no bucket"));
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let (endpoint, style) = match var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"))
        {
            Some(e) => (e, UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let endpoint = endpoint
            .parse()
            .map_err(|e| invalid(&format!("endpoint {endpoint}: {e}")))?;
        let bucket = Bucket::new(endpoint, style, name.to_string(), region)
            .map_err(|e| invalid(&format!("bucket {name}: {e}")))?;
        Ok(S3Location {
            bucket,
            credentials: Credentials::from_env().or_else(profile_credentials),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The key of `name`, a path in a store directory's layout.
    pub fn key(&self, name: &str) -> String {
        match self.prefix.is_empty() {
            true => name.to_string(),
            false => format!("{}/{name}", self.prefix),
        }
    }

    /// A URL that lets its holder `method` the object `name`, for an hour.
    pub fn url(&self, method: Method, name: &str) -> String {
        let key = self.key(name);
        let credentials = self.credentials.as_ref();
        let url = match method {
            Method::Get => self
                .bucket
                .get_object(credentials, &key)
                .sign(PRESIGNED_FOR),
            Method::Head => self
                .bucket
                .head_object(credentials, &key)
                .sign(PRESIGNED_FOR),
            Method::Put => self
                .bucket
                .put_object(credentials, &key)
                .sign(PRESIGNED_FOR),
        };
        url.to_string()
    }

    pub fn describe(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket.name()),
            false => format!("s3://{}/{}", self.bucket.name(), self.prefix),
        }
    }
}

/// The keys of profile `AWS_PROFILE` (default `default`) in the shared credentials file,
/// an INI file of `[profile]` sections with `aws_access_key_id`, `aws_secret_access_key`
/// and `aws_session_token` entries.
fn profile_credentials() -> Option<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".aws/credentials")))?;
    // A regular file of a sane size: a FIFO or a huge file is no credentials file.
    let mut text = String::new();
    crate::image::open_readable(&file, false)
        .ok()?
        .take(CREDENTIALS_MAX)
        .read_to_string(&mut text)
        .ok()?;
    let wanted = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let (mut key, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == wanted;
        } else if let Some((name, value)) = line.split_once('=').filter(|_| inside) {
            let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
            match name.trim() {
                "aws_access_key_id" => key = value,
                "aws_secret_access_key" => secret = value,
                "aws_session_token" => token = value,
                _ => {}
            }
        }
    }
    Some(match token {
        Some(token) => Credentials::new_with_token(key?, secret?, token),
        None => Credentials::new(key?, secret?),
    })
}

/// A presigned GET URL for the object at `location` (`s3://BUCKET/KEY`, an index or its
/// signature); other locations as they are.
pub fn fetchable(location: &str) -> Result<String> {
    if !is_s3(location) {
        return Ok(location.to_string());
    }
    let (dir, name) = location
        .rsplit_once('/')
        .filter(|(dir, name)| dir.len() > "s3:/".len() && !name.is_empty())
        .ok_or_else(|| Error::Invalid(format!("{location}: names no object")))?;
    Ok(S3Location::parse(dir)?.url(Method::Get, name))
}
