//! Label Studio GCS SA storages.
