//! Tensors of the Open Inference Protocol as they travel over REST: `BYTES` elements in JSON
//! `data` or in Triton's binary tensor data extension (each element a 4-byte little-endian
//! length, then its bytes, row-major), `FP32` as JSON numbers or little-endian floats, and the
//! body that carries the binary parts after the JSON header (`Inference-Header-Content-Length`).
//! Pure: no HTTP, no model.

use serde_json::Value;

/// The header that gives the JSON part's length when binary parts follow it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A body split into its JSON header and the binary parts after it.
#[derive(Debug)]
pub struct Body<'a> {
    pub json: &'a [u8],
    pub binary: &'a [u8],
}

/// Splits a request body: with `Inference-Header-Content-Length`, its first that many bytes
/// are the JSON, the rest the binary parts; without it, all of it is JSON.
pub fn split<'a>(body: &'a [u8], header_length: Option<&str>) -> Result<Body<'a>, String> {
    let Some(length) = header_length else { return Ok(Body { json: body, binary: &[] }) };
    let length: usize = length
        .trim()
        .parse()
        .map_err(|_| format!("Inference-Header-Content-Length must be a byte count, not {length:?}"))?;
    if length > body.len() {
        return Err(format!("Inference-Header-Content-Length is {length}, but the body has only {} bytes", body.len()));
    }
    let (json, binary) = body.split_at(length);
    Ok(Body { json, binary })
}

/// Reads `BYTES` elements from a binary part: each a 4-byte little-endian length, then that
/// many bytes.
pub fn decode_bytes(mut part: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !part.is_empty() {
        let Some((len, rest)) = part.split_first_chunk::<4>() else {
            return Err(format!("a BYTES element's length needs 4 bytes; {} are left", part.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!("a BYTES element of {len} bytes runs past its tensor's {} bytes", rest.len()));
        }
        let (element, rest) = rest.split_at(len);
        out.push(element.to_vec());
        part = rest;
    }
    Ok(out)
}

/// Writes `BYTES` elements as a binary part.
pub fn encode_bytes<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Writes `FP32` values as a binary part.
pub fn encode_fp32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A `BYTES` tensor's elements from JSON `data`: a flat (or nested, row-major) list of strings.
pub fn json_strings(data: &Value) -> Result<Vec<String>, String> {
    fn walk(v: &Value, out: &mut Vec<String>) -> Result<(), String> {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, out))?,
            other => return Err(format!("BYTES data holds strings, not {other}")),
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(data, &mut out)?;
    Ok(out)
}

/// The number of elements of a tensor of `shape`, if every dimension is a count.
pub fn elements(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_elements_round_trip_and_bad_framing_is_named() {
        let part = encode_bytes([b"ab".as_slice(), "cé".as_bytes(), b""]);
        assert_eq!(part, b"\x02\x00\x00\x00ab\x03\x00\x00\x00c\xc3\xa9\x00\x00\x00\x00");
        assert_eq!(decode_bytes(&part).unwrap(), vec![b"ab".to_vec(), "cé".as_bytes().to_vec(), vec![]]);
        assert!(decode_bytes(b"\x02\x00").unwrap_err().contains("needs 4 bytes"));
        assert!(decode_bytes(b"\x09\x00\x00\x00ab").unwrap_err().contains("runs past"));
        assert_eq!(encode_fp32(&[1.0, -2.5]), [0, 0, 128, 63, 0, 0, 32, 192]);
    }

    #[test]
    fn a_body_splits_at_the_header_length() {
        let body = b"{\"a\":1}\x01\x02";
        let b = split(body, Some("7")).unwrap();
        assert_eq!((b.json, b.binary), (b"{\"a\":1}".as_slice(), b"\x01\x02".as_slice()));
        assert_eq!(split(body, None).unwrap().json, body);
        assert!(split(body, Some("99")).unwrap_err().contains("only 9 bytes"));
        assert!(split(body, Some("x")).is_err());
    }

    #[test]
    fn json_data_is_strings_flat_or_nested() {
        let nested = serde_json::json!([["a"], ["b"]]);
        assert_eq!(json_strings(&nested).unwrap(), ["a", "b"]);
        assert!(json_strings(&serde_json::json!([1])).unwrap_err().contains("not 1"));
        assert_eq!((elements(&[3, 1]), elements(&[-1]), elements(&[])), (Some(3), None, Some(1)));
    }
}
