//! The helpers on generated types: vectors in both encodings, model specs,
//! item errors and statuses.

use profiled_proto::VectorError;
use profiled_proto::v1::{ItemError, ModelSpec, Vector, model_spec};

#[test]
fn f16_vectors_round_trip_through_little_endian_bytes() {
    let values = [1.0f32, -2.0, 0.5, 65504.0];
    let v = Vector::from_f32_as_f16(&values);
    assert!(v.values.is_empty());
    // 1.0 = 0x3C00, little-endian.
    assert_eq!(&v.f16[..2], &[0x00, 0x3c]);
    assert_eq!(v.dim(), Ok(4));
    assert_eq!(v.to_f32().expect("valid"), values.to_vec());

    // Rounding to nearest: 0.1 is not representable; error ≤ 2^-11 relative.
    let v = Vector::from_f32_as_f16(&[0.1]);
    let back = v.to_f32().expect("valid")[0];
    assert!((back - 0.1).abs() <= 0.1 * 2f32.powi(-11), "{back}");
}

#[test]
fn f32_vectors_and_checks() {
    let v = Vector::from_f32(vec![0.6, 0.8]);
    assert_eq!(v.dim(), Ok(2));
    assert_eq!(v.to_f32_checked(2), Ok(vec![0.6, 0.8]));
    assert_eq!(
        v.to_f32_checked(3),
        Err(VectorError::WrongDimension {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        Vector::from_f32(vec![0.0, f32::NAN]).to_f32_checked(2),
        Err(VectorError::NotFinite(1))
    );
    assert_eq!(
        Vector::from_f32_as_f16(&[f32::INFINITY]).to_f32_checked(1),
        Err(VectorError::NotFinite(0))
    );
    assert_eq!(Vector::default().dim(), Err(VectorError::Empty));
    let both = Vector {
        values: vec![1.0],
        f16: vec![0, 0x3c],
    };
    assert_eq!(both.dim(), Err(VectorError::BothSet));
    let odd = Vector {
        values: Vec::new(),
        f16: vec![0, 0x3c, 0],
    };
    assert_eq!(odd.to_f32(), Err(VectorError::OddF16Length(3)));
    // Messages say what to do.
    assert!(VectorError::Empty.to_string().contains("`values`"));
}

#[test]
fn model_specs() {
    assert_eq!(ModelSpec::default_version("m").selector, None);
    assert_eq!(
        ModelSpec::pinned("m", 3).selector,
        Some(model_spec::Selector::Version(3))
    );
    let spec = ModelSpec::labelled("m", "canary");
    assert_eq!(spec.name, "m");
    assert_eq!(
        spec.selector,
        Some(model_spec::Selector::Label("canary".to_owned()))
    );
}

#[test]
fn item_errors_carry_statuses_both_ways() {
    let status = tonic::Status::not_found("users[1].user_id: \"42\" is not in the users index");
    let item = ItemError::from(&status);
    assert_eq!(item.code, 5);
    assert_eq!(item.status_code(), tonic::Code::NotFound);
    let back = tonic::Status::from(item);
    assert_eq!(back.code(), tonic::Code::NotFound);
    assert_eq!(back.message(), status.message());

    let odd = ItemError {
        code: 1234,
        message: String::new(),
    };
    assert_eq!(odd.status_code(), tonic::Code::Unknown);
}
