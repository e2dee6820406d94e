//! GCS V4 URL signing through signBlob (being written).
