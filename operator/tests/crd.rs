//! The committed custom resource definition is the one the spec generates.

use auth_operator::crd::{CRD_FILES, definition_yaml};

#[test]
fn committed_definitions_are_up_to_date() {
    let generated = definition_yaml().expect("render the definition");
    for file in CRD_FILES {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(committed == generated, "{} is stale: run `auth crd` and commit the result", path.display());
    }
}

/// What an API server without the definition answers for `utilitypipelines`
/// (its own words), from a loopback stand-in: the operator stops at start-up
/// with the command that installs the definition, instead of retrying a watch.
#[tokio::test]
async fn an_operator_started_before_its_definition_says_how_to_install_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let (mut connection, _) = listener.accept().await.expect("accept");
        let mut request = vec![0u8; 8_192];
        let read = connection.read(&mut request).await.expect("read the request");
        let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#;
        let response = format!("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        connection.write_all(response.as_bytes()).await.expect("respond");
        String::from_utf8_lossy(&request[..read]).into_owned()
    });
    let config = kube::Config::new(format!("http://{address}").parse().expect("URL"));
    let client = auth_operator::Client::try_from(config).expect("client");
    let context = auth_operator::Context::new(client, "crd-test");
    let err = auth_operator::controller::require_crd(&context).await.expect_err("no definition");
    assert!(matches!(err, auth_operator::controller::Error::CrdMissing(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("kubectl apply -f crds/") && message.contains("charts/auth"), "{message}");
    let request = server.await.expect("server");
    assert!(request.starts_with("GET /apis/auth.dev/v1alpha1/utilitypipelines?"), "{request}");
}
