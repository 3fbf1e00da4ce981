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

use std::path::Path;
use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, ListObjectsV2, ListParts};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::Listed;
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

    /// A URL that starts a multipart upload of `name` (`POST`).
    pub fn create_upload_url(&self, name: &str) -> String {
        let key = self.key(name);
        CreateMultipartUpload::new(&self.bucket, self.credentials.as_ref(), &key)
            .sign(PRESIGNED_FOR)
            .to_string()
    }

    /// A URL that uploads part `part` of the multipart upload `upload` of `name` (`PUT`).
    pub fn upload_part_url(&self, name: &str, part: u16, upload: &str) -> String {
        let key = self.key(name);
        self.bucket
            .upload_part(self.credentials.as_ref(), &key, part, upload)
            .sign(PRESIGNED_FOR)
            .to_string()
    }

    /// A URL that lists the parts of upload `upload` of `name` after part `after` (`GET`).
    pub fn list_parts_url(&self, name: &str, upload: &str, after: u16) -> String {
        let key = self.key(name);
        let mut action = ListParts::new(&self.bucket, self.credentials.as_ref(), &key, upload);
        if after > 0 {
            action.set_part_number_marker(after);
        }
        action.sign(PRESIGNED_FOR).to_string()
    }

    /// A URL that completes upload `upload` of `name` (`POST`), and the body it takes.
    pub fn complete_upload(&self, name: &str, upload: &str, etags: &[String]) -> (String, String) {
        let key = self.key(name);
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            self.credentials.as_ref(),
            &key,
            upload,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(PRESIGNED_FOR).to_string();
        (url, action.body())
    }

    /// A URL that lists the multipart uploads in progress whose keys start with `name`'s
    /// (`GET ?uploads&prefix=`; rusty-s3 has no such action, so it is signed here with the
    /// crate's own SigV4 signing).
    pub fn list_uploads_url(&self, name: &str) -> String {
        let key = self.key(name);
        let url = self.bucket.base_url().clone();
        let query = [("prefix", key.as_str()), ("uploads", "")];
        match &self.credentials {
            Some(c) => rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                url,
                c.key(),
                c.secret(),
                c.token(),
                self.bucket.region(),
                PRESIGNED_FOR.as_secs(),
                query.into_iter(),
                std::iter::empty(),
            )
            .to_string(),
            None => {
                let mut url = url;
                url.query_pairs_mut()
                    .append_pair("prefix", &key)
                    .append_pair("uploads", "");
                url.to_string()
            }
        }
    }

    /// A URL that lists the objects under the prefix (`GET`), or under its subdirectory
    /// `dir`, a page at a time: the page after `continuation` when given.
    pub fn list_url(&self, dir: Option<&str>, continuation: Option<&str>) -> String {
        let mut action = ListObjectsV2::new(&self.bucket, self.credentials.as_ref());
        let prefix = match dir {
            Some(dir) => format!("{}/", self.key(dir)),
            None if self.prefix.is_empty() => String::new(),
            None => format!("{}/", self.prefix),
        };
        if !prefix.is_empty() {
            action.with_prefix(prefix);
        }
        if let Some(token) = continuation {
            action.with_continuation_token(token.to_string());
        }
        action.sign(PRESIGNED_FOR).to_string()
    }

    /// A URL that deletes the object `name` (`DELETE`).
    pub fn delete_url(&self, name: &str) -> String {
        let key = self.key(name);
        self.bucket
            .delete_object(self.credentials.as_ref(), &key)
            .sign(PRESIGNED_FOR)
            .to_string()
    }

    /// A page of a listing (see [`S3Location::list_url`]): each object's name under the
    /// prefix, size and time, and the token of the next page.
    pub fn listing(&self, xml: &str) -> Result<(Vec<Listed>, Option<String>), String> {
        let page = ListObjectsV2::parse_response(xml)
            .map_err(|e| format!("a ListObjectsV2 answer that does not parse: {e}"))?;
        let mut objects = Vec::with_capacity(page.contents.len());
        for object in page.contents {
            let name = match self.prefix.is_empty() {
                true => object.key.as_str(),
                false => match object.key.strip_prefix(&self.prefix) {
                    Some(rest) => rest.trim_start_matches('/'),
                    None => continue,
                },
            };
            let modified = object
                .last_modified
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .ok_or_else(|| format!("{}: no time it was last modified", object.key))?;
            objects.push(Listed {
                name: name.to_string(),
                size: object.size.unwrap_or(0),
                modified: modified.into(),
            });
        }
        Ok((objects, page.next_continuation_token))
    }

    pub fn describe(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket.name()),
            false => format!("s3://{}/{}", self.bucket.name(), self.prefix),
        }
    }

    /// A failure about the object `name` under the prefix, for `reason`.
    pub fn failure(&self, name: &str, reason: String) -> Error {
        Error::Remote {
            url: format!("{}/{name}", self.describe()),
            reason,
        }
    }
}

/// The text of the first element `<name>` in `xml`, unescaped.
pub(crate) fn element(xml: &str, name: &str) -> Option<String> {
    let (_, rest) = xml.split_once(&format!("<{name}>"))?;
    let (value, _) = rest.split_once(&format!("</{name}>"))?;
    Some(unescaped(value))
}

/// The id of the newest upload of `key` that a ListMultipartUploads answer lists.
pub fn upload_of(xml: &str, key: &str) -> Option<String> {
    let mut found = None;
    for upload in xml.split("<Upload>").skip(1) {
        if element(upload, "Key").as_deref() == Some(key) {
            found = element(upload, "UploadId").or(found);
        }
    }
    found
}

/// A part of a multipart upload, as ListParts lists it.
pub struct Part {
    pub number: u16,
    pub etag: String,
    pub size: u64,
}

/// The parts a ListParts answer lists, and the marker of the next page, when the list
/// is truncated. Read leniently (S3-compatible servers differ in the root element's
/// name).
pub fn parts_of(xml: &str) -> Result<(Vec<Part>, Option<u16>), String> {
    let bad = || {
        format!(
            "a ListParts answer that does not parse: {}",
            xml.chars().take(200).collect::<String>()
        )
    };
    let mut parts = Vec::new();
    for part in xml.split("<Part>").skip(1) {
        let number = element(part, "PartNumber").and_then(|n| n.trim().parse().ok());
        let size = element(part, "Size").and_then(|n| n.trim().parse().ok());
        match (number, element(part, "ETag"), size) {
            (Some(number), Some(etag), Some(size)) => parts.push(Part { number, etag, size }),
            _ => return Err(bad()),
        }
    }
    let truncated = element(xml, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = match truncated {
        true => Some(
            element(xml, "NextPartNumberMarker")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(bad)?,
        ),
        false => None,
    };
    Ok((parts, next))
}

/// The upload id of a CreateMultipartUpload answer.
pub fn created_upload(xml: &str) -> Result<String, String> {
    CreateMultipartUpload::parse_response(xml)
        .map(|r| r.upload_id().to_string())
        .map_err(|e| format!("a CreateMultipartUpload answer that does not parse: {e}"))
}

fn unescaped(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
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
    let text = crate::image::read_text(&file, CREDENTIALS_MAX, "a credentials file").ok()?;
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

/// `e`, saying what a `403` from S3 means where the answer had no body to tell (a HEAD).
pub fn explain_refusal(e: Error) -> Error {
    match e {
        Error::Remote { url, reason } if reason.ends_with("403 Forbidden") => Error::Remote {
            url,
            reason: format!(
                "{reason}: S3 refuses these credentials, or their rights to the bucket (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ),
        },
        e => e,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_and_parts_are_read_from_s3_answers_and_moto_ones() {
        let uploads = "<ListMultipartUploadsResult><Upload><Key>p/packs/a&amp;b</Key><UploadId>one</UploadId></Upload>\
            <Upload><Key>p/packs/other</Key><UploadId>two</UploadId></Upload>\
            <Upload><Key>p/packs/a&amp;b</Key><UploadId>three</UploadId></Upload></ListMultipartUploadsResult>";
        assert_eq!(upload_of(uploads, "p/packs/a&b").as_deref(), Some("three"));
        assert_eq!(upload_of(uploads, "p/packs/none"), None);

        for root in ["ListPartsResult", "ListPartsResponse"] {
            let xml = format!(
                "<{root}><IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>\
                 <Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag><Size>5242880</Size></Part>\
                 <Part><PartNumber>2</PartNumber><ETag>\"e2\"</ETag><Size>7</Size></Part></{root}>"
            );
            let (parts, next) = parts_of(&xml).unwrap();
            assert_eq!(next, Some(2));
            let read: Vec<(u16, &str, u64)> = parts
                .iter()
                .map(|p| (p.number, p.etag.as_str(), p.size))
                .collect();
            assert_eq!(read, [(1, "\"e1\"", 5_242_880), (2, "\"e2\"", 7)]);
        }
        let (parts, next) =
            parts_of("<ListPartsResult><IsTruncated>false</IsTruncated></ListPartsResult>")
                .unwrap();
        assert!(parts.is_empty() && next.is_none());
        assert!(parts_of("<Part><PartNumber>x</PartNumber></Part>").is_err());
        assert!(parts_of("<IsTruncated>true</IsTruncated>").is_err());
    }
}
