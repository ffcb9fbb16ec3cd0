"""Request and response schemas, named by role: `...Request` comes in, `...Public` / `...Response` goes out."""
