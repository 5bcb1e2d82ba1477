//! The signing keys' tests: signing and verifying, rotation, restarts, and property tests
//! of the verifier.

mod unit {
    use super::super::*;
    use crate::store::redb::StoreOptions;

    /// A fixed "now" for these tests.
    const NOW: Secs = 1_700_000_000;

    fn claims(exp: Secs) -> AccessClaims {
        AccessClaims {
            iss: "http://issuer".into(),
            sub: "u1".into(),
            aud: "c1".into(),
            client_id: "c1".into(),
            scope: "read".into(),
            iat: NOW,
            exp,
            jti: "j1".into(),
        }
    }

    fn options(alg: SigningAlg) -> KeyOptions {
        KeyOptions {
            alg,
            key_file: None,
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
            issuer: "http://issuer".into(),
            access_ttl: Duration::from_secs(600),
        }
    }

    #[tokio::test]
    async fn with_hs256_id_tokens_get_a_kept_es256_key_that_verifies_no_access_token() {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::store::redb::open(&dir.path().join("k.redb"), StoreOptions::default()).unwrap();
        let store = &*stores.server;
        let keys = JwtKeys::load(store, options(SigningAlg::HS256), NOW).await.unwrap();
        assert_eq!(keys.id_algorithm(), Some(Algorithm::ES256));
        let id = IdClaims {
            iss: "http://issuer".into(),
            sub: "u1".into(),
            aud: "c1".into(),
            exp: NOW + 60,
            iat: NOW,
            auth_time: Some(NOW),
            nonce: None,
            at_hash: keys.at_hash("access"),
            preferred_username: None,
            name: None,
            email: None,
        };
        let token = keys.sign_id(&id).unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let set: JwkSet = serde_json::from_str(keys.jwks()).unwrap();
        assert_eq!(set.keys.len(), 1);
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["c1"]);
        // Checked against this test's fixed clock, not the machine's.
        v.validate_exp = false;
        assert!(jsonwebtoken::decode::<IdClaims>(&token, &key, &v).is_ok());
        // The id key verifies no access token.
        assert!(keys.verify(&token, NOW).is_none());
        // Kept across restarts; retired (still published) once an asymmetric key signs.
        let again = JwtKeys::load(store, options(SigningAlg::HS256), NOW).await.unwrap();
        let again_token = again.sign_id(&id).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&again_token).unwrap().kid.as_deref(),
            Some(kid.as_str())
        );
        let es = JwtKeys::load(store, options(SigningAlg::ES256), NOW).await.unwrap();
        let set: JwkSet = serde_json::from_str(es.jwks()).unwrap();
        assert!(set.find(&kid).is_some(), "the old id key stays published while its id_tokens live");
        let es_token = es.sign_id(&id).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&es_token).unwrap().kid.as_deref(), es.kid());
    }

    #[tokio::test]
    async fn asymmetric_keys_sign_verify_rotate_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::store::redb::open(&dir.path().join("k.redb"), StoreOptions::default()).unwrap();
        let store = &*stores.server;
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA] {
            let keys = JwtKeys::load(store, options(alg), NOW).await.unwrap();
            let kid = keys.kid().unwrap().to_owned();
            let token = keys.sign(&claims(NOW + 60)).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!((header.alg, header.kid.as_deref()), (alg.algorithm(), Some(kid.as_str())));
            assert!(keys.verify(&token, NOW).is_some());
            // The same key after a restart.
            let again = JwtKeys::load(store, options(alg), NOW).await.unwrap();
            assert_eq!(again.kid(), Some(kid.as_str()));
            // Rotation: new tokens use the new key; the old token still verifies; both published.
            let new_kid = rotate(store, &options(alg), NOW).await.unwrap();
            let rotated = JwtKeys::load(store, options(alg), NOW).await.unwrap();
            assert_eq!(rotated.kid(), Some(new_kid.as_str()));
            assert_ne!(new_kid, kid);
            assert!(rotated.verify(&token, NOW).is_some());
            let set: JwkSet = serde_json::from_str(rotated.jwks()).unwrap();
            assert!(set.find(&kid).is_some() && set.find(&new_kid).is_some());
            // A token naming an unknown kid, or the right kid with another algorithm, fails.
            let mut forged = Header::new(Algorithm::HS256);
            forged.kid = Some(new_kid.clone());
            let hs = jsonwebtoken::encode(&forged, &claims(NOW + 60), &EncodingKey::from_secret(b"guess")).unwrap();
            assert!(rotated.verify(&hs, NOW).is_none());
        }
        // HS256 tokens keep verifying after a switch to an asymmetric algorithm.
        let hs_keys = JwtKeys::load(store, options(SigningAlg::HS256), NOW).await.unwrap();
        let hs_token = hs_keys.sign(&claims(NOW + 60)).unwrap();
        assert!(hs_keys.kid().is_none());
        let es = JwtKeys::load(store, options(SigningAlg::ES256), NOW).await.unwrap();
        assert!(es.verify(&hs_token, NOW).is_some());
        // ...but not forever: once the last HS256 token has expired, HS256 is refused.
        let (stored, mut ring) = read_keyring(store).await.unwrap();
        ring.hmac_until = Some(NOW - 1);
        write_keyring(store, stored, &ring).await.unwrap();
        let es = JwtKeys::load(store, options(SigningAlg::ES256), NOW).await.unwrap();
        assert!(es.verify(&hs_token, NOW).is_none());
        assert!(rotate(store, &options(SigningAlg::HS256), NOW).await.is_err());
        stores.server.close();
    }

    #[test]
    fn rsa_and_algorithm_names() {
        let der = generate_der(SigningAlg::RS256).unwrap();
        let key = GeneratedKey {
            alg: SigningAlg::RS256,
            der: B64.encode(der),
            created_at: 0,
        };
        let (encoding, jwk) = from_generated(&key).unwrap();
        let keys = JwtKeys::build(SigningAlg::RS256, Some(&jwk), encoding, b"s", "http://issuer", &[], None, None).unwrap();
        let token = keys.sign(&claims(NOW + 60)).unwrap();
        assert!(keys.verify(&token, NOW).is_some());
        assert_eq!("EdDSA".parse::<SigningAlg>(), Ok(SigningAlg::EdDSA));
        assert!("none".parse::<SigningAlg>().is_err());
    }

    #[test]
    fn jwt_round_trip_and_tamper_detection() {
        let keys = JwtKeys::new(&[7u8; 32], "http://issuer");
        let claims = AccessClaims {
            iss: "http://issuer".into(),
            sub: "u".into(),
            aud: "c".into(),
            client_id: "c".into(),
            scope: "read".into(),
            iat: NOW,
            exp: NOW + 60,
            jti: "j".into(),
        };
        let jwt = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&jwt, NOW), Some(claims.clone()));
        assert_eq!(keys.verify(&jwt, NOW + 60), Some(claims.clone()), "valid through its exp second");
        assert_eq!(keys.verify(&jwt, NOW + 61), None);
        assert!(keys.verify_ignoring_expiry(&jwt, NOW + 61).is_some());
        let mut tampered = jwt.clone();
        tampered.push('x');
        assert_eq!(keys.verify(&tampered, NOW), None);
        assert_eq!(JwtKeys::new(&[8u8; 32], "http://issuer").verify(&jwt, NOW), None);
        assert_eq!(JwtKeys::new(&[7u8; 32], "http://other").verify(&jwt, NOW), None);
    }
}

/// Property tests: any string offered as a JWT is refused without panicking, and a token we
/// signed does not survive any single-character change.
mod fuzz {
    use super::super::*;
    use proptest::prelude::*;

    const NOW: Secs = 1_700_000_000;

    proptest! {
        #[test]
        fn garbage_is_never_a_valid_token(s in "\\PC{0,400}", dots in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}") {
            let keys = JwtKeys::new(&[3u8; 32], "http://issuer");
            prop_assert!(keys.verify(&s, NOW).is_none());
            prop_assert!(keys.verify(&dots, NOW).is_none());
            prop_assert!(keys.verify_ignoring_expiry(&dots, NOW).is_none());
        }

        #[test]
        fn a_changed_character_breaks_the_signature(at in any::<prop::sample::Index>(), with in "[A-Za-z0-9_-]") {
            let keys = JwtKeys::new(&[3u8; 32], "http://issuer");
            let claims = AccessClaims {
                iss: "http://issuer".into(),
                sub: "u".into(),
                aud: "c".into(),
                client_id: "c".into(),
                scope: "read".into(),
                iat: 1,
                exp: u64::MAX / 4,
                jti: "j".into(),
            };
            let token = keys.sign(&claims).unwrap();
            let i = at.index(token.len());
            let mut bytes = token.clone().into_bytes();
            if bytes[i] != b'.' && bytes[i] != with.as_bytes()[0] {
                bytes[i] = with.as_bytes()[0];
                let changed = String::from_utf8(bytes).unwrap();
                if let Some(c) = keys.verify(&changed, NOW) {
                    // Base64 can spell the same bytes twice only in the last character's spare bits.
                    prop_assert_eq!(c, claims);
                }
            }
        }
    }
}
