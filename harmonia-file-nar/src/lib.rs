//! The Nix ARchive (NAR) format: streaming encoder, validating decoder, restorer and .ls listing.
