//! TLS under the HTTP front end, by rustls: the server configuration of
//! an `--https-socket` made from its PEM files, the handshake, and what it
//! settled as CGI variables. Nothing here is hand-written cryptography or
//! parsing: rustls, its pki-types PEM reader and webpki do it all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::ServerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::{Config, HttpsSocket, SniCert, TlsHttp2};
use crate::listen::Address;
use crate::request::{TLS_SUITES, TlsInfo, Var, VarName};

/// What one HTTPS listener accepts connections with.
pub struct TlsListener {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Clients are asked for a certificate.
    asks_client_cert: bool,
    /// When a certificate is asked for but not required: the CA's check,
    /// made again after the handshake (which let any certificate through)
    /// to tell the app why one failed.
    optional_check: Option<Arc<dyn ClientCertVerifier>>,
}

/// The provider with only the suites `ciphers` names (all of them when it
/// names none). Words of OpenSSL's cipher-string language (`HIGH`,
/// `!aNULL`) mean nothing to rustls, whose suites are all modern: they are
/// left out, with a warning.
fn provider(ciphers: &str, socket: &str) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Colons, as uWSGI and nginx write them; OpenSSL also takes commas
    // and spaces (Python's ssl, so Gunicorn's and uvicorn's lists).
    let words: Vec<&str> = ciphers
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Ok(provider);
    }
    let name_of = |w: &str| {
        TLS_SUITES
            .iter()
            .find(|(openssl, _, _)| openssl.eq_ignore_ascii_case(w))
            .map_or_else(
                || w.to_ascii_uppercase(),
                |(_, ours, _)| (*ours).to_string(),
            )
    };
    let wanted: Vec<String> = words.iter().map(|w| name_of(w)).collect();
    let known = |name: &str| {
        provider
            .cipher_suites
            .iter()
            .any(|s| format!("{:?}", s.suite()) == name)
    };
    let unknown: Vec<&str> = words
        .iter()
        .zip(&wanted)
        .filter(|(_, n)| !known(n))
        .map(|(w, _)| *w)
        .collect();
    // Suite names only, none of them known (a typo, a suite rustls lacks):
    // refused, as OpenSSL refuses a list that selects no cipher, rather
    // than every suite offered in its place. Lists of OpenSSL's keywords
    // (HIGH, !aNULL, ECDHE+AESGCM) still mean "the modern ones".
    let suite_like = |w: &str| {
        (w.contains('-') || w.starts_with("TLS_"))
            && !w.starts_with(['!', '-', '+', '@'])
            && !w.contains('+')
    };
    if unknown.len() == words.len() && words.iter().all(|w| suite_like(w)) {
        return Err(format!(
            "no cipher suite in {ciphers:?} is one rustls has (a typo, or a suite too old to offer); name suites from: {}",
            TLS_SUITES
                .iter()
                .map(|(openssl, _, _)| *openssl)
                .collect::<Vec<_>>()
                .join(":")
        ));
    }
    if !unknown.is_empty() {
        crate::say!(
            "oxgate: warning: --https-socket {socket}: {} in the cipher list: not suites rustls has (OpenSSL's cipher-string words are not read: every suite rustls offers is a modern one)",
            unknown.join(":")
        );
    }
    if unknown.len() < words.len() {
        // As OpenSSL, whose cipher string governs TLS 1.2 and below (TLS
        // 1.3's suites are a setting apart): a list naming no TLS 1.3
        // suite leaves them all offered, and a TLS 1.2 list (Mozilla's
        // "intermediate") does not turn TLS 1.3 off.
        let names_tls13 = provider.cipher_suites.iter().any(|s| {
            s.version() == &rustls::version::TLS13 && wanted.contains(&format!("{:?}", s.suite()))
        });
        provider.cipher_suites.retain(|s| {
            (!names_tls13 && s.version() == &rustls::version::TLS13)
                || wanted.contains(&format!("{:?}", s.suite()))
        });
    }
    Ok(provider)
}

/// A PEM reading error as words: rustls's own shows marker names as byte
/// lists.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a section has no end ({}), the file is cut short",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "a malformed section start: {}",
            String::from_utf8_lossy(line)
        ),
        Error::Base64Decode(why) => format!("bad base64 in a section: {why}"),
        Error::NoItemsFound => "no PEM section of the kind needed".into(),
        other => other.to_string(),
    }
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read certificates from {}: {}",
                path.display(),
                pem_error(&e)
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls configuration of one `--https-socket`, with every file read
/// and checked now: a missing file, a key that is not the certificate's,
/// or a CA that cannot be read stops the start (or the reload) with the
/// reason, before a client finds out.
fn listener(sock: &HttpsSocket, opts: &TlsHttp2) -> Result<TlsListener, String> {
    let fail = |e: String| format!("--https-socket {}: {e}", sock.addr);
    let provider = Arc::new(provider(&sock.ciphers, &sock.addr).map_err(fail)?);
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            fail(format!(
                "the cipher suites and TLS versions do not fit: {e}"
            ))
        })?;
    let mut optional_check = None;
    let builder = match &sock.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca).map_err(fail)? {
                roots.add(cert).map_err(|e| {
                    fail(format!(
                        "{}: not a usable CA certificate: {e}",
                        ca.display()
                    ))
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if sock.client_required {
                builder
                    .with_client_cert_verifier(verifier.build().map_err(|e| fail(e.to_string()))?)
            } else if sock.client_verified_when_given {
                // rustls checks a certificate given, and fails the
                // handshake on a bad one, as Python's CERT_OPTIONAL does.
                let verifier = verifier
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            } else {
                let strict = verifier
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                optional_check = Some(strict.clone());
                builder.with_client_cert_verifier(Arc::new(ReportingClientVerifier(strict)))
            }
        }
    };
    let default = certified_key(&sock.cert, &sock.key, &provider).map_err(fail)?;
    let by_name = opts
        .sni
        .iter()
        .map(|s| {
            certified_key(&s.cert, &s.key, &provider)
                .map(|k| (s.name.clone(), k))
                .map_err(|e| format!("--sni {}: {e}", s.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = builder.with_cert_resolver(Arc::new(CertsByServerName { default, by_name }));
    // http/1.0 too, as nginx: an old client that offers it alone is not
    // refused the handshake (hyper serves HTTP/1.0).
    config.alpn_protocols = if opts.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()]
    } else {
        vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()]
    };
    Ok(TlsListener {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        asks_client_cert: sock.client_ca.is_some(),
        optional_check,
    })
}

/// The client check when a certificate is optional: a certificate the CA
/// does not vouch for (expired, another CA's, self-signed) still completes
/// the handshake, so that the app is told why it failed
/// (`SSL_CLIENT_VERIFY=FAILED:reason`, as Apache's `optional_no_ca` gives
/// it) and can answer as it likes, rather than the client seeing a bare
/// alert. The handshake signature is still checked, so the client holds
/// the certificate's key; and a failed certificate's names are never given
/// to the app as if they were vouched for.
#[derive(Debug)]
struct ReportingClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ReportingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged after the handshake (`TlsListener::settled`).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why a client certificate failed, in the words OpenSSL gives
/// (`X509_verify_cert_error_string`), which Apache and nginx put after
/// `FAILED:` in `SSL_CLIENT_VERIFY`. OpenSSL goes on past a fault and
/// reports the last it found: a time fault over a purpose fault over a
/// chain fault, so they are looked for in that order (webpki stops at its
/// first, and checks the leaf's time before anything else).
fn failure_reason(
    e: &rustls::Error,
    leaf: &CertificateDer<'_>,
    sent: &[CertificateDer<'_>],
) -> String {
    let fault = match e {
        rustls::Error::InvalidCertificate(f) => Some(f),
        _ => None,
    };
    match fault {
        Some(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            return "certificate has expired".into();
        }
        Some(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            return "certificate is not yet valid".into();
        }
        _ => {}
    }
    let parsed = |c: &CertificateDer<'_>| -> Option<(Vec<u8>, Vec<u8>, Option<bool>)> {
        let (_, c) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
        let client_use = match c.extended_key_usage() {
            Ok(Some(eku)) => Some(eku.value.client_auth || eku.value.any),
            _ => None,
        };
        Some((
            c.issuer().as_raw().to_vec(),
            c.subject().as_raw().to_vec(),
            client_use,
        ))
    };
    let Some((issuer, subject, client_use)) = parsed(leaf) else {
        return "unspecified certificate verification error".into();
    };
    if client_use == Some(false)
        || matches!(
            fault,
            Some(CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. })
        )
    {
        return "unsuitable certificate purpose".into();
    }
    match fault {
        Some(CertificateError::BadSignature) => return "certificate signature failure".into(),
        Some(CertificateError::Revoked) => return "certificate revoked".into(),
        _ => {}
    }
    // The chain OpenSSL would build from what the client sent: each
    // certificate's issuer found by subject, up to a self-signed one.
    let others: Vec<_> = sent.iter().filter_map(parsed).collect();
    let (mut top_issuer, mut top_subject, mut length) = (issuer, subject, 1);
    while top_issuer != top_subject && length <= others.len() {
        let Some((i, s, _)) = others.iter().find(|(_, s, _)| *s == top_issuer) else {
            break;
        };
        (top_issuer, top_subject, length) = (i.clone(), s.clone(), length + 1);
    }
    match (top_issuer == top_subject, length) {
        (true, 1) => "self-signed certificate".into(),
        (true, _) => "self-signed certificate in certificate chain".into(),
        (false, 1) => "unable to verify the first certificate".into(),
        (false, _) => "unable to get local issuer certificate".into(),
    }
}

/// A certificate chain and its key, read and checked to belong together.
fn certified_key(
    cert: &std::path::Path,
    key: &std::path::Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let text = std::fs::read(key).unwrap_or_default();
        let has = |s: &[u8]| text.windows(s.len()).any(|w| w == s);
        if has(b"ENCRYPTED PRIVATE KEY") || has(b"Proc-Type: 4,ENCRYPTED") {
            format!(
                "the private key {} is encrypted, and keys with a passphrase are not read: decrypt it once with `openssl pkey -in {} -out KEY` (mode 600)",
                key.display(),
                key.display()
            )
        } else {
            format!(
                "cannot read a private key from {}: {}",
                key.display(),
                pem_error(&e)
            )
        }
    })?;
    CertifiedKey::from_der(chain, der, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "the certificate {} and the key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            )
        })
}

/// The certificate for the server name a client asks for (`--sni`), else
/// the socket's own: a client that names none, or another, still gets an
/// answer (as from uWSGI and nginx's default server).
#[derive(Debug)]
struct CertsByServerName {
    default: Arc<CertifiedKey>,
    /// Lower-case names; `*.example.com` for one level below.
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl CertsByServerName {
    fn for_name(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        let exact = self.by_name.iter().find(|(n, _)| *n == name);
        let wildcard = || {
            let parent = name.split_once('.')?.1;
            self.by_name
                .iter()
                .find(|(n, _)| n.strip_prefix("*.") == Some(parent))
        };
        exact
            .or_else(wildcard)
            .map_or(&self.default, |(_, key)| key)
    }
}

impl ResolvesServerCert for CertsByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.for_name(hello.server_name()).clone())
    }
}

impl TlsListener {
    /// What a finished handshake settled, as CGI variables (the names
    /// Apache's mod_ssl and nginx give them).
    pub fn settled(&self, conn: &rustls::ServerConnection) -> TlsInfo {
        let mut vars = vec![(VarName::Known(Var::HTTPS), Bytes::from_static(b"on"))];
        let mut intermediates = Vec::new();
        let mut put = |name: &'static str, value: Bytes| {
            vars.push((VarName::Other(Bytes::from_static(name.as_bytes())), value));
        };
        if let Some(v) = conn.protocol_version() {
            put(
                "SSL_PROTOCOL",
                Bytes::from_static(match v {
                    rustls::ProtocolVersion::TLSv1_3 => b"TLSv1.3",
                    _ => b"TLSv1.2",
                }),
            );
        }
        // The name the client asked for (mod_ssl's SSL_TLS_SNI).
        if let Some(name) = conn.server_name() {
            put("SSL_TLS_SNI", Bytes::copy_from_slice(name.as_bytes()));
        }
        if let Some(s) = conn.negotiated_cipher_suite() {
            let iana = format!("{:?}", s.suite());
            let openssl = TLS_SUITES.iter().find(|(_, name, _)| *name == iana);
            put(
                "SSL_CIPHER",
                match openssl {
                    Some((name, _, _)) => Bytes::from_static(name.as_bytes()),
                    None => Bytes::from(iana),
                },
            );
        }
        if self.asks_client_cert {
            // When a certificate is required, a bad one fails the handshake
            // (rustls verifies it); when optional, it is checked now.
            let chain = conn.peer_certificates().unwrap_or_default();
            let failed = chain.split_first().and_then(|(cert, rest)| {
                let check = self.optional_check.as_ref()?;
                let e = check
                    .verify_client_cert(cert, rest, UnixTime::now())
                    .err()?;
                Some(failure_reason(&e, cert, rest))
            });
            match (chain.first(), failed) {
                (Some(_), Some(why)) => {
                    put("SSL_CLIENT_VERIFY", Bytes::from(format!("FAILED:{why}")));
                }
                (Some(cert), None) => {
                    put("SSL_CLIENT_VERIFY", Bytes::from_static(b"SUCCESS"));
                    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
                        if let Some(dn) = dn_string(parsed.subject()) {
                            put("SSL_CLIENT_S_DN", Bytes::from(dn));
                        }
                        // uWSGI's own names for it (its --https router):
                        // an app moved from there authorises on these.
                        put("HTTPS_DN", Bytes::from(oneline_dn(parsed.subject())));
                        put(
                            "HTTPS_CLIENT_CERTIFICATE",
                            Bytes::copy_from_slice(cert.as_ref()),
                        );
                        // Who vouches for it, its serial and its end, as
                        // mod_ssl names them: apps that authorise by issuer
                        // and subject together need the issuer.
                        if let Some(dn) = dn_string(parsed.issuer()) {
                            put("SSL_CLIENT_I_DN", Bytes::from(dn));
                        }
                        put(
                            "SSL_CLIENT_M_SERIAL",
                            Bytes::from(serial_hex(parsed.raw_serial())),
                        );
                        let validity = parsed.validity();
                        put(
                            "SSL_CLIENT_V_START",
                            Bytes::from(openssl_time(&validity.not_before)),
                        );
                        put(
                            "SSL_CLIENT_V_END",
                            Bytes::from(openssl_time(&validity.not_after)),
                        );
                    }
                    // PEM, as Apache's SSL_CLIENT_CERT and nginx's
                    // $ssl_client_escaped_cert (unescaped) give it.
                    let leaf = Bytes::from(pem(cert));
                    // uWSGI's name for it (--https-export-cert).
                    put("HTTPS_CC", leaf.clone());
                    put("SSL_CLIENT_CERT", leaf);
                    // The intermediates the client sent with it, as
                    // mod_ssl's SSL_CLIENT_CERT_CHAIN_n (the ASGI tls
                    // extension's client_cert_chain after the leaf).
                    for (n, intermediate) in chain.iter().skip(1).enumerate() {
                        intermediates.push((
                            VarName::Other(Bytes::from(format!("SSL_CLIENT_CERT_CHAIN_{n}"))),
                            Bytes::from(pem(intermediate)),
                        ));
                    }
                }
                (None, _) => put("SSL_CLIENT_VERIFY", Bytes::from_static(b"NONE")),
            }
        }
        vars.append(&mut intermediates);
        TlsInfo { vars }
    }
}

/// A certificate's name in RFC 4514 form (`CN=alice,O=Example`: the last
/// RDN first, as nginx's `$ssl_client_s_dn` and Apache's `SSL_CLIENT_S_DN`
/// with `LegacyDNStringFormat` off write it), with OpenSSL's short names
/// for the attributes, so that names copied from `openssl x509 -subject
/// -nameopt RFC2253` match.
fn dn_string(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let name = openssl_short_name(&oid).map_or(oid.clone(), str::to_string);
            let value = match dn_value_text(atv.attr_value()) {
                Some(text) => escape_dn_value(&text),
                // RFC 4514 §2.4: a value of no string type, as `#` and
                // the hex of its encoding.
                None => format!("#{}", hex_upper(&der_of(atv.attr_value()))),
            };
            parts.push(format!("{name}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// A certificate's name as OpenSSL's `X509_NAME_oneline` writes it, which
/// uWSGI gives as HTTPS_DN: `/CN=alice/O=Example`, in the certificate's
/// order, bytes outside printable ASCII as `\xHH`.
fn oneline_dn(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    for rdn in name.iter() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            out.push('/');
            out.push_str(openssl_short_name(&oid).unwrap_or(&oid));
            out.push('=');
            let raw = atv.attr_value().data;
            let text = dn_value_text(atv.attr_value());
            for b in text.as_deref().map_or(raw, str::as_bytes) {
                match b {
                    b' '..=b'~' => out.push(char::from(*b)),
                    _ => out.push_str(&format!("\\x{b:02X}")),
                }
            }
        }
    }
    out
}

/// OpenSSL's short name for a DN attribute (`crypto/objects/objects.txt`).
fn openssl_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

/// A DN attribute's value as text, for each string type a certificate
/// may use: BMPString as UTF-16, UniversalString as UTF-32 and
/// T61String as Latin-1, as OpenSSL reads them (Windows CAs write
/// non-ASCII names as BMPString).
fn dn_value_text(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::BmpString if data.len().is_multiple_of(2) => char::decode_utf16(
            data.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if data.len().is_multiple_of(4) => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

/// A value's DER encoding: its identifier (class, constructed bit and
/// tag), its length and its content.
fn der_of(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Vec<u8> {
    let len = value.data.len();
    let class = (value.header.class() as u8) << 6;
    let constructed = u8::from(value.header.is_constructed()) << 5;
    let mut out = match value.tag().0 {
        n @ 0..=30 => vec![class | constructed | n as u8],
        // A high tag number: base 128, most significant group first.
        n => {
            let mut groups = vec![(n & 0x7f) as u8];
            let mut rest = n >> 7;
            while rest > 0 {
                groups.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            groups.push(class | constructed | 0x1f);
            groups.reverse();
            groups
        }
    };
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value.data);
    out
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A serial number as OpenSSL prints it (mod_ssl's SSL_CLIENT_M_SERIAL,
/// nginx's `$ssl_client_serial`): the integer's bytes in hex, without the
/// zero byte DER puts before a first byte whose top bit is set.
fn serial_hex(der: &[u8]) -> String {
    let start = der
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(der.len().saturating_sub(1));
    hex_upper(&der[start..])
}

/// A certificate time as OpenSSL prints it (mod_ssl's SSL_CLIENT_V_END,
/// nginx's `$ssl_client_v_end`): `Dec  7 21:30:07 2026 GMT`.
fn openssl_time(t: &x509_parser::time::ASN1Time) -> String {
    let shown = t.to_string();
    match shown.strip_suffix(" +00:00") {
        Some(utc) => format!("{utc} GMT"),
        None => shown,
    }
}

/// A DER certificate in PEM form.
fn pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// RFC 4514 §2.4: the characters a DN string must escape.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every `--https-socket`'s listener, by address: made once by the master
/// before it forks, so a worker started later (a respawn) serves the
/// certificates the master checked, whatever the files hold by then.
static LISTENERS: std::sync::OnceLock<Vec<(Address, Arc<TlsListener>)>> =
    std::sync::OnceLock::new();

/// Reads and checks every `--https-socket`'s files, relative paths from
/// `base` (the directory oxgate started in: `--chdir` comes later, and a
/// reload checks them from elsewhere).
pub fn load(
    cfg: &Config,
    base: &std::path::Path,
) -> Result<Vec<(Address, Arc<TlsListener>)>, String> {
    cfg.https_sockets
        .iter()
        .map(|sock| {
            let addr = crate::listen::parse(&sock.addr)?;
            let sock = &HttpsSocket {
                cert: base.join(&sock.cert),
                key: base.join(&sock.key),
                client_ca: sock.client_ca.as_ref().map(|ca| base.join(ca)),
                ..sock.clone()
            };
            let opts = &TlsHttp2 {
                sni: cfg
                    .tls_http2
                    .sni
                    .iter()
                    .map(|s| SniCert {
                        cert: base.join(&s.cert),
                        key: base.join(&s.key),
                        ..s.clone()
                    })
                    .collect(),
                ..cfg.tls_http2.clone()
            };
            Ok((addr, Arc::new(listener(sock, opts)?)))
        })
        .collect()
}

/// Loads the TLS listeners this process (and the workers it forks) serve.
pub fn install(cfg: &Config, base: &std::path::Path) -> Result<(), String> {
    let loaded = load(cfg, base)?;
    let _ = LISTENERS.set(loaded);
    Ok(())
}

/// The TLS listener of the socket at `addr`, if it is an HTTPS one.
pub fn listener_for(addr: &Address) -> Option<Arc<TlsListener>> {
    LISTENERS
        .get()?
        .iter()
        .find(|(a, _)| a == addr)
        .map(|(_, l)| l.clone())
}

/// How often a line sums up failed handshakes: a scanner or a client with
/// an old TLS fails one a connection, and must not fill the log.
const FAILURE_LINE_EVERY: Duration = Duration::from_secs(60);

thread_local! {
    /// Handshakes failed since the last line about them, and when that
    /// line was written (a worker serves on one thread).
    static FAILURES: std::cell::Cell<(u64, Option<Instant>)> = const { std::cell::Cell::new((0, None)) };
}

/// Where this process counts failed handshakes for the stats and metrics:
/// its worker's scoreboard slot, which lives as long as the process.
static FAILURE_COUNTER: std::sync::OnceLock<&'static std::sync::atomic::AtomicU64> =
    std::sync::OnceLock::new();

/// Has failed handshakes counted into `counter` from now on.
pub fn count_failed_handshakes_in(counter: &'static std::sync::atomic::AtomicU64) {
    let _ = FAILURE_COUNTER.set(counter);
}

/// Counts a failed handshake and logs at most one line a minute about
/// them, with the latest reason and client.
pub fn handshake_failed(why: &std::io::Error, peer: Option<std::net::SocketAddr>) {
    if let Some(counter) = FAILURE_COUNTER.get() {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let now = Instant::now();
    let (pending, last) = FAILURES.get();
    let pending = pending + 1;
    if last.is_none_or(|t| now.duration_since(t) >= FAILURE_LINE_EVERY) {
        FAILURES.set((0, Some(now)));
        let from = peer.map_or_else(String::new, |p| format!(" (from {})", p.ip()));
        crate::say!(
            "oxgate: {pending} TLS handshake(s) failed since the last such line (at most one a minute); the latest: {why}{from}"
        );
    } else {
        FAILURES.set((pending, last));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_line_name_is_openssls() {
        use x509_parser::prelude::FromDer;
        // CN=alice, O=Example, in that order.
        let der: &[u8] = &[
            0x30, 0x22, 0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x05, b'a',
            b'l', b'i', b'c', b'e', 0x31, 0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c,
            0x07, b'E', b'x', b'a', b'm', b'p', b'l', b'e',
        ];
        let (_, name) = x509_parser::x509::X509Name::from_der(der).unwrap();
        assert_eq!(oneline_dn(&name), "/CN=alice/O=Example");
        assert_eq!(dn_string(&name).as_deref(), Some("O=Example,CN=alice"));
    }

    #[test]
    fn dn_values_escape_what_rfc_4514_says() {
        assert_eq!(escape_dn_value("alice"), "alice");
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(escape_dn_value(" x"), "\\ x");
        assert_eq!(escape_dn_value("q\"<>;\\"), "q\\\"\\<\\>\\;\\\\");
    }

    #[test]
    fn openssl_and_rustls_suite_names_both_select_suites() {
        let p = provider("ECDHE-RSA-AES128-GCM-SHA256:TLS13_AES_256_GCM_SHA384", "t").unwrap();
        // Every suite rustls has is in the table of names.
        for s in rustls::crypto::ring::default_provider().cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(
                TLS_SUITES
                    .iter()
                    .any(|(_, n, code)| *n == name && u16::from(s.suite()) == *code),
                "{name}"
            );
        }
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names.len(),
            2,
            "{names:?}: exactly the two named suites are kept"
        );
        // Only OpenSSL's cipher-string words: every suite stays.
        let all = rustls::crypto::ring::default_provider().cipher_suites.len();
        assert_eq!(
            provider("HIGH:!aNULL", "t").unwrap().cipher_suites.len(),
            all
        );
        assert_eq!(provider("", "t").unwrap().cipher_suites.len(), all);
        // Suite names, none usable: refused, as OpenSSL refuses them.
        for typo in [
            "ECDHE-RSA-AES128-GCM-SHA265",
            "DES-CBC3-SHA",
            "TLS_AES_256_GCM_SHA385",
        ] {
            let e = provider(typo, "t").unwrap_err();
            assert!(e.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{e}");
        }
        // One usable among typos: the usable one, with a warning.
        assert!(
            provider(
                "ECDHE-RSA-AES128-GCM-SHA265:ECDHE-RSA-AES128-GCM-SHA256",
                "t"
            )
            .is_ok()
        );
    }

    #[test]
    fn dn_values_of_every_string_type_and_of_none() {
        use x509_parser::der_parser::asn1_rs::{Any, FromDer};
        let any = |der: &'static [u8]| Any::from_der(der).unwrap().1;
        // BMPString "Mü", T61String "M\xfc" (Latin-1), UTF8String "Mü".
        assert_eq!(
            dn_value_text(&any(&[0x1e, 4, 0, b'M', 0, 0xfc])).as_deref(),
            Some("Mü")
        );
        assert_eq!(
            dn_value_text(&any(&[0x14, 2, b'M', 0xfc])).as_deref(),
            Some("Mü")
        );
        assert_eq!(
            dn_value_text(&any(&[0x0c, 3, b'M', 0xc3, 0xbc])).as_deref(),
            Some("Mü")
        );
        // No string: dumped whole, its identifier's class and constructed
        // bit kept (a SEQUENCE is 0x30, not its tag number 0x10).
        let seq: &[u8] = &[0x30, 3, 0x02, 1, 5];
        assert_eq!(dn_value_text(&any(seq)), None);
        assert_eq!(der_of(&any(seq)), seq);
        assert_eq!(serial_hex(&[0x00, 0xab, 0x12]), "AB12");
        assert_eq!(serial_hex(&[0x0a]), "0A");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
