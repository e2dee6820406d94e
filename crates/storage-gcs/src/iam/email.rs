//! The forms of a Google service-account email.

/// Whether `email` has the form of a Google service account:
///
/// * `<name>@<project>.iam.gserviceaccount.com` (user-managed; `name` is 6–30 characters
///   of `[a-z0-9-]`, starting with a letter and not ending with `-`; `project` is a
///   project id, optionally followed by the domain of a domain-scoped project, e.g.
///   `name@my-project.example.com.iam.gserviceaccount.com`);
/// * `<project>@appspot.gserviceaccount.com` (App Engine default);
/// * `<number>-compute@developer.gserviceaccount.com` (Compute Engine default).
///
/// A project id is 6–30 characters of `[a-z0-9-]`, starting with a letter and not ending
/// with `-`. Upper case and surrounding spaces are rejected (trim first if needed).
///
/// ```
/// use storage_gcs::iam::valid_service_account_email;
/// assert!(valid_service_account_email("label-studio@my-project.iam.gserviceaccount.com"));
/// assert!(!valid_service_account_email("someone@gmail.com"));
/// ```
pub fn valid_service_account_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if let Some(project) = domain.strip_suffix(".iam.gserviceaccount.com") {
        return valid_account_name(local) && valid_project(project);
    }
    match domain {
        "appspot.gserviceaccount.com" => valid_project_id(local),
        "developer.gserviceaccount.com" => local.strip_suffix("-compute").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 20
                && n.bytes().all(|b| b.is_ascii_digit())
                && !n.starts_with('0')
        }),
        _ => false,
    }
}

/// `[a-z][a-z0-9-]*[a-z0-9]`, 6–30 characters.
fn valid_account_name(name: &str) -> bool {
    (6..=30).contains(&name.len()) && lower_dashed(name)
}

/// A project id, or `<project id>.<domain>` for domain-scoped projects.
fn valid_project(project: &str) -> bool {
    match project.split_once('.') {
        None => valid_project_id(project),
        Some((id, domain)) => valid_project_id(id) && valid_domain(domain),
    }
}

/// `[a-z][a-z0-9-]*[a-z0-9]`, 6–30 characters.
fn valid_project_id(id: &str) -> bool {
    (6..=30).contains(&id.len()) && lower_dashed(id)
}

/// Dot-separated DNS labels of `[a-z0-9-]`, not starting or ending with `-`.
fn valid_domain(domain: &str) -> bool {
    domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Starts with `a-z`, only `a-z0-9-`, does not end with `-`.
fn lower_dashed(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}
