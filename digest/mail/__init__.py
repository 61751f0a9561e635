"""Mail transports: one file per backend, all behind digest.mail.base.BaseBackend."""
