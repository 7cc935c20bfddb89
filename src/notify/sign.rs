//! Standard Webhooks signatures: `webhook-signature: v1,<base64 of HMAC-SHA256 over
//! "{webhook-id}.{webhook-timestamp}.{body}">`, keyed with the bytes of `whsec_<base64>`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SigningKey;

/// The `webhook-signature` header value of a message.
pub fn signature(key: &SigningKey, id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose())
        .expect("HMAC-SHA256 takes a key of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// Whether `header` (space-separated `v1,<sig>` entries) holds a valid signature of the
/// message; for receivers (the tests') and for checking the signing itself.
pub fn verify(key: &SigningKey, id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let Some(expected) = signature(key, id, timestamp, body)
        .strip_prefix("v1,")
        .map(str::to_string)
    else {
        return false;
    };
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(expected) else {
        return false;
    };
    header
        .split(' ')
        .filter_map(|e| e.strip_prefix("v1,"))
        .any(|sig| {
            base64::engine::general_purpose::STANDARD
                .decode(sig)
                .is_ok_and(|got| {
                    got.len() == expected.len()
                        && got.iter().zip(&expected).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_specification_example() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, id, ts, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(verify(&key, id, ts, body, &signature(&key, id, ts, body)));
        assert!(!verify(
            &key,
            id,
            ts + 1,
            body,
            &signature(&key, id, ts, body)
        ));
    }
}
