"""Repository tooling (lock file checks, the image's runtime closure); not shipped."""
