//! Streaming an object to an HTTP client with Range (206/416) and ETag
//! (304) support, never holding the whole object in memory.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http_range_header::parse_range_header;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};

/// How the response should be cached and tagged.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    /// `Cache-Control` header value, if any.
    pub(crate) cache_control: Option<&'static str>,
    /// Tag responses with the store's own ETag (buckets) instead of a weak
    /// tag of modification time and size (local files, as Label Studio).
    pub(crate) store_etag: bool,
}

/// Label Studio's weak ETag of a local file: `W/"<mtime ns hex>-<size hex>"`.
fn weak_etag(meta: &ObjectMeta) -> String {
    let nanos = meta.last_modified.timestamp_nanos_opt().unwrap_or_default();
    format!("W/\"{nanos:x}-{:x}\"", meta.size)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let Some(value) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    value
        .split(',')
        .any(|candidate| candidate.trim() == "*" || bare(candidate) == bare(etag))
}

/// Streams `location` from `store`, honouring `Range` and `If-None-Match`.
/// Store failures (a missing object included) are returned for the caller
/// to answer in its own terms.
pub(crate) async fn serve_object(
    store: Arc<dyn ObjectStore>,
    location: &Path,
    headers: &HeaderMap,
    options: &ServeOptions,
) -> Result<Response, storage_core::Error> {
    let context = || format!("reading \"{location}\"");
    let meta = store
        .head(location)
        .await
        .map_err(|err| storage_core::Error::from_object_store(context(), err))?;
    let etag = match (&meta.e_tag, options.store_etag) {
        (Some(tag), true) if tag.starts_with('"') || tag.starts_with("W/") => tag.clone(),
        (Some(tag), true) => format!("\"{tag}\""),
        _ => weak_etag(&meta),
    };
    let mut response_headers = HeaderMap::new();
    let put = |h: &mut HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put(&mut response_headers, header::ETAG, &etag);
    put(&mut response_headers, header::ACCEPT_RANGES, "bytes");
    put(
        &mut response_headers,
        header::LAST_MODIFIED,
        &meta
            .last_modified
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    );
    if let Some(cache) = options.cache_control {
        put(&mut response_headers, header::CACHE_CONTROL, cache);
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if range_header.is_none() && if_none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let content_type = mime_guess::from_path(location.filename().unwrap_or_default())
        .first_raw()
        .unwrap_or("application/octet-stream");
    put(&mut response_headers, header::CONTENT_TYPE, content_type);

    let mut status = StatusCode::OK;
    let mut get = GetOptions::default();
    let mut length = meta.size;
    if let Some(raw) = range_header {
        match parse_range_header(raw).and_then(|r| r.validate(meta.size)) {
            Ok(ranges) if ranges.len() == 1 => {
                let range = &ranges[0];
                let (start, end) = (*range.start(), *range.end());
                get.range = Some(GetRange::Bounded(start..end + 1));
                length = end + 1 - start;
                status = StatusCode::PARTIAL_CONTENT;
                put(
                    &mut response_headers,
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{end}/{}", meta.size),
                );
            }
            // Several ranges: serve the whole object, which clients accept.
            Ok(_) => {}
            Err(_) => {
                put(
                    &mut response_headers,
                    header::CONTENT_RANGE,
                    &format!("bytes */{}", meta.size),
                );
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response());
            }
        }
    }
    put(
        &mut response_headers,
        header::CONTENT_LENGTH,
        &length.to_string(),
    );
    let result = store
        .get_opts(location, get)
        .await
        .map_err(|err| storage_core::Error::from_object_store(context(), err))?;
    let stream = result.into_stream().map_err(std::io::Error::other);
    Ok((status, response_headers, Body::from_stream(stream)).into_response())
}
