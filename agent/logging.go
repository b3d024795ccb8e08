package agent

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewLogger builds the structured logger described by the [agent] table:
// log_format text or json, log_level debug, info, warn or error.
func NewLogger(w io.Writer, s Settings) (*slog.Logger, error) {
	var level slog.Level
	switch strings.ToLower(s.LogLevel) {
	case "", "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("agent.log_level: unknown level %q (want debug, info, warn or error)", s.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(s.LogFormat) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("agent.log_format: unknown format %q (want text or json)", s.LogFormat)
	}
}
