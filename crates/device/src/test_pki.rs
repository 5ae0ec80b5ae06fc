//! Test-only issuer: a name-constrained root and intermediate (rcgen), and leaves with the
//! origin-binding extension.
//!
//! rcgen takes OIDs as `u64` arcs and cannot write the extension's 128-bit arc, so a leaf is
//! made with a placeholder OID of the same encoded length, the placeholder bytes are replaced in
//! the TBSCertificate, and the TBSCertificate is signed again. The lengths do not change, so the
//! result is well-formed DER; the tests check it with x509-parser and webpki.

use localcert_proto::binding::{ORIGIN_BINDING_OID_DER, OriginBinding};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SubjectPublicKeyInfo,
};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// 2.25.{0x0123456789abcdef}.{0xfedcba9876543210}: 1 + 9 + 10 = 20 content bytes, like ours.
const PLACEHOLDER_ARCS: [u64; 4] = [2, 25, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];

fn base128(mut v: u64) -> Vec<u8> {
    let mut out = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v != 0 {
        out.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    out.reverse();
    out
}

fn placeholder_der() -> Vec<u8> {
    let mut out = vec![0x69];
    out.extend(base128(PLACEHOLDER_ARCS[2]));
    out.extend(base128(PLACEHOLDER_ARCS[3]));
    out
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

/// A test issuer: root → intermediate → leaves.
pub(crate) struct TestCa {
    pub root: Vec<u8>,
    pub intermediate: Vec<u8>,
    inter_params: CertificateParams,
    inter_key: KeyPair,
}

fn constraints() -> NameConstraints {
    NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(".local".into())],
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(rcgen::CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(rcgen::CidrSubnet::V6([0; 16], [0; 16])),
        ],
    }
}

impl TestCa {
    pub(crate) fn new(cn: &str) -> Self {
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params
            .distinguished_name
            .push(DnType::CommonName, format!("{cn} Root"));
        root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root_params.name_constraints = Some(constraints());
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let inter_key = KeyPair::generate().unwrap();
        let mut inter_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        inter_params
            .distinguished_name
            .push(DnType::CommonName, format!("{cn} Intermediate"));
        inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        inter_params.name_constraints = Some(constraints());
        let intermediate = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        Self {
            root: root.der().to_vec(),
            intermediate: intermediate.der().to_vec(),
            inter_params,
            inter_key,
        }
    }

    /// A chain `[leaf, intermediate]` for `spki` and `names`, valid for `validity` seconds
    /// around now, with the origin binding if given.
    pub(crate) fn issue(
        &self,
        spki: &[u8],
        names: &[&str],
        binding: Option<&OriginBinding>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Vec<Vec<u8>> {
        let bindings: Vec<(&OriginBinding, bool)> =
            binding.map(|b| (b, false)).into_iter().collect();
        self.issue_with_bindings(spki, names, &bindings, not_before, not_after)
    }

    /// As [`Self::issue`], with each binding extension given as `(value, critical)`: the
    /// profile's refusals need a repeated or a critical one.
    pub(crate) fn issue_with_bindings(
        &self,
        spki: &[u8],
        names: &[&str],
        bindings: &[(&OriginBinding, bool)],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Vec<Vec<u8>> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        for (b, critical) in bindings {
            let mut extension = CustomExtension::from_oid_content(&PLACEHOLDER_ARCS, b.to_der());
            extension.set_criticality(*critical);
            params.custom_extensions.push(extension);
        }
        let issuer = Issuer::from_params(&self.inter_params, &self.inter_key);
        let public = SubjectPublicKeyInfo::from_der(spki).unwrap();
        let leaf = params.signed_by(&public, &issuer).unwrap().der().to_vec();
        let leaf = if !bindings.is_empty() {
            self.patch_oid(&leaf)
        } else {
            leaf
        };
        vec![leaf, self.intermediate.clone()]
    }

    fn patch_oid(&self, cert_der: &[u8]) -> Vec<u8> {
        let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
        let mut tbs = cert.tbs_certificate.as_ref().to_vec();
        let placeholder = placeholder_der();
        assert_eq!(placeholder.len(), ORIGIN_BINDING_OID_DER.len());
        while let Some(at) = tbs
            .windows(placeholder.len())
            .position(|w| w == placeholder.as_slice())
        {
            tbs[at..at + placeholder.len()].copy_from_slice(ORIGIN_BINDING_OID_DER);
        }
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.inter_key.serialize_der(),
            &rng,
        )
        .unwrap();
        let sig = key.sign(&rng, &tbs).unwrap();
        // AlgorithmIdentifier ecdsa-with-SHA256.
        let alg = [
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ];
        let mut bits = vec![0];
        bits.extend_from_slice(sig.as_ref());
        let mut body = tbs;
        body.extend_from_slice(&alg);
        body.extend(tlv(0x03, &bits));
        tlv(0x30, &body)
    }
}
