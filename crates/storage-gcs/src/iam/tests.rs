use chrono::Utc;
use http::StatusCode;

use super::error::error_response;
use super::*;

#[test]
fn accepts_user_managed_and_default_service_accounts() {
    for email in [
        "label-studio@my-project.iam.gserviceaccount.com",
        "abcdef@abcdef.iam.gserviceaccount.com",
        "a23456789012345678901234567890@p23456789012345678901234567890.iam.gserviceaccount.com",
        "service-123@gcp-sa-storage.iam.gserviceaccount.com",
        "reader@my-project.example.com.iam.gserviceaccount.com",
        "my-project@appspot.gserviceaccount.com",
        "123456789012-compute@developer.gserviceaccount.com",
    ] {
        assert!(valid_service_account_email(email), "{email}");
    }
}

#[test]
fn rejects_other_forms() {
    for email in [
        "",
        "label-studio",
        "someone@gmail.com",
        "short@my-project.iam.gserviceaccount.com",
        "a234567890123456789012345678901@my-project.iam.gserviceaccount.com",
        "1abcdef@my-project.iam.gserviceaccount.com",
        "abcdef-@my-project.iam.gserviceaccount.com",
        "Label-Studio@my-project.iam.gserviceaccount.com",
        "label_studio@my-project.iam.gserviceaccount.com",
        "label-studio@proj.iam.gserviceaccount.com",
        "label-studio@1project.iam.gserviceaccount.com",
        "label-studio@my-project-.iam.gserviceaccount.com",
        "label-studio@.iam.gserviceaccount.com",
        "label-studio@my-project.iam.gserviceaccount.com ",
        " label-studio@my-project.iam.gserviceaccount.com",
        "label-studio@my-project.iam.gserviceaccount.com.evil.com",
        "a@b@my-project.iam.gserviceaccount.com",
        "label-studio@my-project.gserviceaccount.com",
        "label-studio@my-project.example.iam.gserviceaccount.com",
        "x@appspot.gserviceaccount.com",
        "-compute@developer.gserviceaccount.com",
        "12ab-compute@developer.gserviceaccount.com",
        "0123-compute@developer.gserviceaccount.com",
        "123456789012@developer.gserviceaccount.com",
    ] {
        assert!(!valid_service_account_email(email), "{email:?}");
    }
}

#[test]
fn google_errors_map_to_messages_that_name_the_problem() {
    let body = br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).","status":"PERMISSION_DENIED"}}"#;
    let err = error_response(
        "https://iam.example",
        IamOperation::GenerateAccessToken,
        "t@p.iam.gserviceaccount.com",
        StatusCode::FORBIDDEN,
        body,
    );
    assert_eq!(
            err.to_string(),
            "the server's identity lacks iam.serviceAccounts.getAccessToken on t@p.iam.gserviceaccount.com \
             (grant it roles/iam.serviceAccountTokenCreator on that service account); Google said: \
             Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
        );

    let disabled = br#"{"error":{"code":403,"message":"IAM Service Account Credentials API has not been used in project 1 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED"}]}}"#;
    let err = error_response(
        "e",
        IamOperation::SignBlob,
        "t",
        StatusCode::FORBIDDEN,
        disabled,
    );
    assert!(matches!(err, IamError::ApiDisabled { .. }), "{err:?}");

    let err = error_response(
        "e",
        IamOperation::SignBlob,
        "t",
        StatusCode::BAD_GATEWAY,
        b"<html>bad gateway</html>",
    );
    assert_eq!(
            err.to_string(),
            "the IAM Credentials API at e answered HTTP 502 to signBlob for t; Google said: <html>bad gateway</html>"
        );
    assert!(err.is_retryable());

    let err = error_response(
        "e",
        IamOperation::GenerateAccessToken,
        "t",
        StatusCode::BAD_REQUEST,
        br#"{"error":{"code":400,"message":"Lifetime too long","status":"INVALID_ARGUMENT"}}"#,
    );
    assert_eq!(
            err.to_string(),
            "the IAM Credentials API at e answered HTTP 400 to generateAccessToken for t; Google said: INVALID_ARGUMENT: Lifetime too long"
        );
    assert!(!err.is_retryable());
}

#[test]
fn errors_map_to_object_store_and_storage_core_kinds() {
    let denied = IamError::PermissionDenied {
        email: "t".into(),
        operation: IamOperation::SignBlob,
        message: String::new(),
    };
    assert!(matches!(
        denied.clone().into_object_store("t"),
        object_store::Error::PermissionDenied { .. }
    ));
    assert!(matches!(
        storage_core::Error::from(denied),
        storage_core::Error::PermissionDenied { .. }
    ));
    let missing = IamError::NotFound {
        email: "t".into(),
        message: String::new(),
    };
    assert!(matches!(
        missing.clone().into_object_store("t"),
        object_store::Error::Generic { .. }
    ));
    assert!(matches!(
        storage_core::Error::from(missing),
        storage_core::Error::InvalidConfig(_)
    ));
    let network = IamError::Network {
        endpoint: "e".into(),
        operation: IamOperation::SignBlob,
        email: "t".into(),
        message: "refused".into(),
        transient: true,
    };
    assert_eq!(
        storage_core::Error::from(network).retry(),
        storage_core::Retry::Temporary
    );
}

#[test]
fn access_token_debug_hides_the_token() {
    let token = AccessToken {
        token: "ya29.secret".into(),
        expire_time: Utc::now(),
    };
    assert!(!format!("{token:?}").contains("secret"));
}
