#include "common/grpc_tls.h"

#include <fstream>
#include <sstream>

namespace switchboard {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const v1::Config& config) {
  if (!TlsEnabled(config)) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions opts;
  opts.pem_key_cert_pairs.push_back({ReadFile(config.tls().key_file()), ReadFile(config.tls().cert_file())});
  return grpc::SslServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const v1::Config& config) {
  if (config.tls().ca_file().empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = ReadFile(config.tls().ca_file());
  return grpc::SslCredentials(opts);
}

}  // namespace switchboard
