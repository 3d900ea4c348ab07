// Centrifugo's server HTTP API on switchboard-http, as Centrifugo serves it,
// so Centrifugo's server SDKs (cent.js, cent, gocent, ...) work unchanged:
//
//   - POST /api/<method> with the method's params as the body (the routes come
//     from the google.api.http annotations of the Centrifugo* RPCs);
//   - POST /api with {"method": M, "params": P}, one command per line; several
//     lines (cent.js's pipeline) get one reply per line;
//   - POST /api/batch with {"commands": [{M: P}, ...]} -> {"replies": [...]};
//   - errors as {"error": {"code", "message"}} with Centrifugo's statuses: 401
//     for a missing or wrong API key, 400 for a body that is not JSON, 404 for
//     an unknown route, and 200 for errors of the call itself (bad arguments,
//     NATS down), which carry the Centrifugo error code.
package main

import (
	"bytes"
	"encoding/json"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
)

// Centrifugo server API error codes.
const (
	centInternal       = 100
	centUnauthorized   = 101
	centUnknownChannel = 102
	centMethodNotFound = 104
	centBadRequest     = 107
	centNotAvailable   = 108
	maxCommandsPerCall = 1000
)

// The methods this gateway serves in Centrifugo's form (the others in
// Centrifugo, publish and friends, belong to channels, which do not exist here).
var centMethods = map[string]bool{"user_connections": true, "disconnect": true, "info": true, "publish": true,
	"broadcast": true}

var methodName = regexp.MustCompile(`^[a-z_]{1,64}$`)

func isCentrifugoPath(p string) bool { return p == "/api" || strings.HasPrefix(p, "/api/") }

type centError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func centErrorBody(code int, msg string) []byte {
	b, _ := json.Marshal(map[string]centError{"error": {Code: code, Message: msg}})
	return b
}

func writeCentError(w http.ResponseWriter, httpStatus, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(centErrorBody(code, msg))
}

// How a gRPC error from control reads in Centrifugo's API.
func centFromGrpc(c codes.Code) (httpStatus, code int) {
	switch c {
	case codes.Unauthenticated, codes.PermissionDenied:
		return http.StatusUnauthorized, centUnauthorized
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusOK, centBadRequest
	case codes.NotFound:
		return http.StatusOK, centUnknownChannel
	case codes.Unimplemented:
		return http.StatusOK, centNotAvailable
	default: // Unavailable (NATS down), DeadlineExceeded, Internal, ...
		return http.StatusOK, centInternal
	}
}

type centrifugoAPI struct {
	inner http.Handler // the grpc-gateway mux behind the body-MD5 recorder
}

func (c *centrifugoAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeCentError(w, http.StatusMethodNotAllowed, centBadRequest, "use POST")
		return
	}
	body, err := ioutil.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeCentError(w, http.StatusRequestEntityTooLarge, centBadRequest, "request body too large or unreadable")
		return
	}
	switch r.URL.Path {
	case "/api", "/api/":
		c.serveCommands(w, r, body)
	case "/api/batch":
		c.serveBatch(w, r, body)
	default:
		method := strings.TrimPrefix(r.URL.Path, "/api/")
		if !centMethods[method] {
			writeCentError(w, http.StatusNotFound, centMethodNotFound, "method not found")
			return
		}
		if len(bytes.TrimSpace(body)) > 0 && !isJSONObject(body) {
			writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: the body is not a JSON object")
			return
		}
		status, out := c.call(r, method, body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(out)
	}
}

func isJSONObject(b []byte) bool {
	var v map[string]json.RawMessage
	return json.Unmarshal(b, &v) == nil && v != nil
}

// One method through the grpc-gateway mux, as POST /api/<method>.
func (c *centrifugoAPI) call(r *http.Request, method string, params []byte) (int, []byte) {
	if !methodName.MatchString(method) || !centMethods[method] {
		return http.StatusOK, centErrorBody(centMethodNotFound, "method not found")
	}
	if len(bytes.TrimSpace(params)) == 0 || string(bytes.TrimSpace(params)) == "null" {
		params = []byte("{}")
	}
	sub, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "/api/"+method, bytes.NewReader(params))
	if err != nil {
		return http.StatusOK, centErrorBody(centInternal, "internal server error")
	}
	sub.Header = r.Header.Clone()
	sub.Header.Set("Content-Type", "application/json")
	sub.RemoteAddr = r.RemoteAddr
	rec := httptest.NewRecorder()
	c.inner.ServeHTTP(rec, sub)
	out := bytes.TrimSpace(rec.Body.Bytes())
	if method == "broadcast" && rec.Code == http.StatusOK {
		out = dropNullReplyFields(out)
	}
	return rec.Code, out
}

// A broadcast's reply per channel holds a result or an error; Centrifugo
// leaves out the one it does not have, where the JSON mapping (EmitDefaults)
// writes null.
func dropNullReplyFields(body []byte) []byte {
	var top map[string]json.RawMessage
	var result map[string]json.RawMessage
	var responses []map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || json.Unmarshal(top["result"], &result) != nil ||
		json.Unmarshal(result["responses"], &responses) != nil {
		return body
	}
	for _, r := range responses {
		for k, v := range r {
			if string(bytes.TrimSpace(v)) == "null" {
				delete(r, k)
			}
		}
	}
	var err error
	if result["responses"], err = json.Marshal(responses); err != nil {
		return body
	}
	if top["result"], err = json.Marshal(result); err != nil {
		return body
	}
	out, err := json.Marshal(top)
	if err != nil {
		return body
	}
	return out
}

type centCommand struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// POST /api: one {"method","params"} object per line; one reply per line.
func (c *centrifugoAPI) serveCommands(w http.ResponseWriter, r *http.Request, body []byte) {
	var cmds []centCommand
	for _, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var cmd centCommand
		if err := json.Unmarshal(line, &cmd); err != nil || cmd.Method == "" {
			writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: each line must be a JSON object with a method")
			return
		}
		if len(cmd.Params) > 0 && string(cmd.Params) != "null" && !isJSONObject(cmd.Params) {
			writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: params must be a JSON object")
			return
		}
		cmds = append(cmds, cmd)
	}
	if len(cmds) == 0 {
		writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: no command")
		return
	}
	if len(cmds) > maxCommandsPerCall {
		writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: too many commands")
		return
	}
	replies := make([][]byte, 0, len(cmds))
	for _, cmd := range cmds {
		status, out := c.call(r, cmd.Method, cmd.Params)
		if status == http.StatusUnauthorized {
			writeCentError(w, http.StatusUnauthorized, centUnauthorized, "unauthorized")
			return
		}
		replies = append(replies, out)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// No trailing newline: cent.js splits the body on "\n" and parses every piece.
	_, _ = w.Write(bytes.Join(replies, []byte("\n")))
}

// POST /api/batch: {"commands": [{"<method>": params}, ...]}.
func (c *centrifugoAPI) serveBatch(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Commands []map[string]json.RawMessage `json:"commands"`
		Parallel bool                         `json:"parallel"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: "+err.Error())
		return
	}
	if len(req.Commands) > maxCommandsPerCall {
		writeCentError(w, http.StatusBadRequest, centBadRequest, "bad request: too many commands")
		return
	}
	replies := make([]json.RawMessage, 0, len(req.Commands))
	for _, cmd := range req.Commands {
		if len(cmd) != 1 {
			replies = append(replies, centErrorBody(centBadRequest, "bad request: one method per command"))
			continue
		}
		for method, params := range cmd {
			status, out := c.call(r, method, params)
			if status == http.StatusUnauthorized {
				writeCentError(w, http.StatusUnauthorized, centUnauthorized, "unauthorized")
				return
			}
			var parsed struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if json.Unmarshal(out, &parsed) != nil {
				replies = append(replies, centErrorBody(centInternal, "internal server error"))
			} else if len(parsed.Error) > 0 {
				replies = append(replies, out)
			} else {
				reply, _ := json.Marshal(map[string]json.RawMessage{method: orEmpty(parsed.Result)})
				replies = append(replies, reply)
			}
		}
	}
	out, _ := json.Marshal(map[string][]json.RawMessage{"replies": replies})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

func orEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return b
}
