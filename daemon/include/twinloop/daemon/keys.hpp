// CURVE key files for the control socket: `twinloop keygen`, and the loaders the server and the
// control client use for key pairs, public keys and the server's allow-list of client keys.
//
// Keys are ZeroMQ CURVE keys (Curve25519) in Z85 text, 40 characters each. Files are text: lines
// whose first word starts with '#' are comments (unless that word is itself a whole 40-character
// key), blank lines are ignored.
//
//   PREFIX.key_secret  (mode 0600)  the secret key, one line; the public key is derived from it
//   PREFIX.key                      "<public key> <name>", one line: append it to an allow-list
//
// An allow-list holds one client public key per line, optionally followed by a name (the rest of
// the line) that the server logs and hands to the session engine as the client's identity.
//
// Every loader throws KeyFileError naming the file and line of each problem; nothing here keeps
// state, so all functions are thread safe. Not for the real-time path (file I/O).
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace twinloop::daemon {

/// Length of a CURVE key in Z85 text.
inline constexpr std::size_t kZ85KeyLength = 40;

/// A key file or allow-list that cannot be used. what() is one or more lines "file:line: problem"
/// (line left out when the problem concerns the whole file).
class KeyFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A CURVE key pair in Z85 text.
struct Keypair {
  std::string public_key;
  std::string secret_key;
};

/// One allowed client.
struct AllowedKey {
  std::string public_key;  ///< Z85
  std::string name;        ///< from the allow-list; the public key itself when none was given
  int line = 0;            ///< 1-based line in the allow-list file
};

/// \return true when `text` is a 40-character Z85 string that decodes to a 32-byte key.
[[nodiscard]] bool is_z85_key(std::string_view text) noexcept;

/// A fresh key pair from libzmq (libsodium). Public keys that start with '#' are redrawn so that
/// a key line can never be mistaken for a comment by a reader less careful than ours.
/// \throws std::runtime_error when libzmq was built without CURVE
[[nodiscard]] Keypair generate_keypair();

struct KeygenOptions {
  std::filesystem::path out_prefix;  ///< writes out_prefix + ".key_secret" and + ".key"
  bool force = false;                ///< overwrite existing files
};

/// `twinloop keygen --out PREFIX [--force]`: writes a new key pair. The secret file is created
/// with mode 0600 (and set to 0600 when overwritten); neither file is overwritten without
/// `force`. Prints both paths and the public key on stdout.
/// \return kExitOk, kExitRefused (files exist, not writable, no CURVE), kExitUsage (no prefix)
int keygen(const KeygenOptions& options);

/// Reads a secret key file and derives its public key.
/// \throws KeyFileError (missing, unreadable, no key, not a key, more than one key)
[[nodiscard]] Keypair load_keypair(const std::filesystem::path& secret_file);

/// Reads a public key file (the first word of its one key line; a name after it is ignored).
/// \throws KeyFileError
[[nodiscard]] std::string load_public_key(const std::filesystem::path& public_file);

/// Reads an allow-list: every problem (bad key, duplicate key) is reported, one line each.
/// An empty allow-list is valid (it refuses everyone).
/// \throws KeyFileError
[[nodiscard]] std::vector<AllowedKey> load_allow_list(const std::filesystem::path& file);

/// Parses allow-list text; `display_name` is the file name used in errors.
/// \throws KeyFileError
[[nodiscard]] std::vector<AllowedKey> parse_allow_list(std::string_view text,
                                                       std::string_view display_name);

}  // namespace twinloop::daemon
