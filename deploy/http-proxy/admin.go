package main

// The admin page (/admin on the operator listener): one static file built
// into the binary, no external resources. It calls the public HTTP API,
// which the operator listener serves as well (same origin for the page).

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"strings"
)

//go:embed admin.html
var adminPage []byte

// adminCSP allows the page's one inline script (by its hash) and nothing
// from anywhere else: a client-supplied value that slipped into the page as
// markup still could not run.
var adminCSP = func() string {
	page := string(adminPage)
	start := strings.Index(page, "<script>") + len("<script>")
	end := strings.Index(page, "</script>")
	sum := sha256.Sum256([]byte(page[start:end]))
	return "default-src 'none'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; " +
		"form-action 'none'"
}()

func adminHandler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/admin" && r.URL.Path != "/admin/" {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", adminCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(adminPage)
}
