//! Standard metadata (RFC 8414), the JWK Set and asymmetric signing verified by a JWT library
//! as a resource server would, key rotation, and introspection (RFC 7662).

use std::process::Command;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

async fn jwks(s: &TestServer) -> JwkSet {
    let r = http().build().unwrap().get(s.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    r.json().await.unwrap()
}

/// Verifies `token` the way a resource server does: by the JWK Set alone.
fn verify_with(set: &JwkSet, token: &str, issuer: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("kid in the header");
    let jwk = set.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &v).expect("verifies").claims
}

#[tokio::test]
async fn metadata_lists_every_endpoint_with_cors() {
    let s = TestServer::start(&[]).await;
    let r = http()
        .build()
        .unwrap()
        .get(s.url("/.well-known/oauth-authorization-server"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["issuer"], "http://localhost:8080");
    for (field, path) in [
        ("device_authorization_endpoint", "/oauth/device/code"),
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(m[field], format!("http://localhost:8080{path}"), "{field}");
    }
    let grants: Vec<&str> = m["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(grants, ["authorization_code", DEVICE_GRANT, "refresh_token", "client_credentials"]);
    assert_eq!(m["authorization_endpoint"], "http://localhost:8080/oauth/authorize");
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    // OpenID Connect on the device grant: userinfo, and how id_tokens are signed.
    assert_eq!(m["userinfo_endpoint"], "http://localhost:8080/oauth/userinfo");
    assert_eq!(m["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    assert!(
        m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&"client_secret_basic".into())
    );
    // PKCE: S256 only.
    assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    // The preflight a browser sends first.
    let r = http()
        .build()
        .unwrap()
        .request(reqwest::Method::OPTIONS, s.url("/.well-known/jwks.json"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("GET"));
    // HS256 (the default) publishes no access-token key: it is secret. The one key published
    // is the ES256 key that signs id_tokens, and an access token does not verify with it.
    let set = jwks(&s).await;
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].common.key_algorithm, Some(jsonwebtoken::jwk::KeyAlgorithm::ES256));
    s.stop().await;
}

#[tokio::test]
async fn es256_and_eddsa_tokens_verify_by_the_jwks_and_survive_rotation() {
    for alg in ["ES256", "EdDSA"] {
        let s = TestServer::start(&["--jwt-signing-algorithm", alg]).await;
        let old = s.tokens_for(&s.client_id).await;
        let old_token = old["access_token"].as_str().unwrap().to_owned();
        let set = jwks(&s).await;
        assert_eq!(set.keys.len(), 1);
        let claims = verify_with(&set, &old_token, "http://localhost:8080");
        assert_eq!(claims["client_id"], s.client_id.as_str());
        assert_eq!(
            jsonwebtoken::decode_header(&old_token).unwrap().alg,
            if alg == "ES256" { Algorithm::ES256 } else { Algorithm::EdDSA }
        );
        let old_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();
        let client_id = s.client_id.clone();
        let dir = s.stop().await;

        // `authgate keys rotate`, the real binary, offline on the same database.
        let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["keys", "rotate"])
            .env_clear()
            .envs(database_env(dir.path()).await)
            .env("JWT_SIGNING_ALGORITHM", alg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let new_kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_ne!(new_kid, old_kid);

        let s = TestServer::start_in(dir, &["--jwt-signing-algorithm", alg]).await;
        assert_eq!(s.client_id, client_id);
        let new = s.tokens_for(&s.client_id).await;
        let new_token = new["access_token"].as_str().unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(new_token).unwrap().kid.as_deref(),
            Some(new_kid.as_str())
        );
        // Both keys are published; both tokens verify, by the JWKS and by the server.
        let set = jwks(&s).await;
        assert_eq!(set.keys.len(), 2);
        verify_with(&set, &old_token, "http://localhost:8080");
        verify_with(&set, new_token, "http://localhost:8080");
        let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some(&old_token)).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        s.stop().await;
    }
}

#[tokio::test]
async fn a_private_key_file_signs_and_a_bad_one_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ec.pem");
    // A PKCS#8 P-256 key, as `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes.
    let key = p256_pem();
    std::fs::write(&pem, key).unwrap();
    let s = TestServer::start(&["--jwt-signing-algorithm", "ES256", "--jwt-private-key-file", pem.to_str().unwrap()]).await;
    let t = s.tokens_for(&s.client_id).await;
    verify_with(&jwks(&s).await, t["access_token"].as_str().unwrap(), "http://localhost:8080");
    s.stop().await;

    std::fs::write(&pem, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("server")
        .env_clear()
        .env("SERVER_ADDR", "127.0.0.1:0")
        .env("DATABASE_PATH", dir.path().join("x.redb"))
        .env("JWT_SIGNING_ALGORITHM", "ES256")
        .env("JWT_PRIVATE_KEY_FILE", &pem)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_PRIVATE_KEY_FILE"));
}

fn p256_pem() -> String {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
}

async fn introspect(s: &TestServer, auth: (&str, Option<&str>), form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = http()
        .build()
        .unwrap()
        .post(s.url("/oauth/introspect"))
        .basic_auth(auth.0, auth.1)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn introspection_answers_for_access_and_refresh_tokens() {
    let s = TestServer::start(&["--jwt-expiration", "3s"]).await;
    let (rs_id, rs_secret) = s.create_client("Resource server", true, None).await;
    let rs = (rs_id.as_str(), rs_secret.as_deref());
    let t = s.tokens_for(&s.client_id).await;
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();

    let (status, a) = introspect(&s, rs, &[("token", access), ("token_type_hint", "access_token")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a["active"], true);
    assert_eq!(a["client_id"], s.client_id.as_str());
    assert_eq!(a["username"], "admin");
    assert_eq!(a["token_type"], "Bearer");
    assert_eq!(a["iss"], "http://localhost:8080");
    assert!(a["exp"].as_u64().unwrap() > a["iat"].as_u64().unwrap());
    // The hint is only a hint: a refresh token introspected with the access hint still answers.
    let (_, r) = introspect(&s, rs, &[("token", refresh), ("token_type_hint", "access_token")]).await;
    assert_eq!(r["active"], true);
    assert_eq!(r["token_type"], "refresh_token");
    assert!(r.get("jti").is_none());
    // Body authentication works too.
    let (status, b) = post_form(
        &s.url("/oauth/introspect"),
        &[("token", access), ("client_id", rs.0), ("client_secret", rs.1.unwrap())],
    )
    .await;
    assert_eq!((status, b["active"].clone()), (StatusCode::OK, Value::Bool(true)));

    // Unknown tokens, and any token with a wrong secret or no client at all.
    let (_, u) = introspect(&s, rs, &[("token", "no-such-token")]).await;
    assert_eq!(u, serde_json::json!({"active": false}));
    let (status, _) = introspect(&s, (rs.0, Some("wrong")), &[("token", access)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No client authentication at all: RFC 7662 §2.1 with RFC 6749 §5.2, invalid_client with
    // a Basic challenge.
    let r = crate::common::http()
        .build()
        .unwrap()
        .post(s.url("/oauth/introspect"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Basic"), "{challenge:?}");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_client", "{e}");
    // A public client sees its own tokens, not another client's.
    let (other, _) = s.create_client("Other", false, None).await;
    let (_, own) = introspect(&s, (&s.client_id, None), &[("token", access)]).await;
    assert_eq!(own["active"], true);
    let (_, foreign) = introspect(&s, (&other, None), &[("token", access)]).await;
    assert_eq!(foreign, serde_json::json!({"active": false}));

    // Revoked: the refresh token (RFC 7009) goes inactive at once.
    let (status, _) = post_form(&s.url("/oauth/revoke"), &[("token", refresh), ("client_id", &s.client_id)]).await;
    assert_eq!(status, StatusCode::OK);
    let (_, r) = introspect(&s, rs, &[("token", refresh)]).await;
    assert_eq!(r, serde_json::json!({"active": false}));
    // Expired: the access token after its 3 s.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let (_, a) = introspect(&s, rs, &[("token", access)]).await;
    assert_eq!(a, serde_json::json!({"active": false}));
    s.stop().await;
}
