#ifndef AOPAY_COMMON_OPENSSL_PTR_H_
#define AOPAY_COMMON_OPENSSL_PTR_H_

// Owning pointers for the OpenSSL objects the gateway handles itself (TLS
// files, AOPay's extra CAs).

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

namespace aopay {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct CertificateDeleter {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
struct PrivateKeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using CertificatePtr = std::unique_ptr<X509, CertificateDeleter>;
using PrivateKeyPtr = std::unique_ptr<EVP_PKEY, PrivateKeyDeleter>;

}  // namespace aopay

#endif  // AOPAY_COMMON_OPENSSL_PTR_H_
