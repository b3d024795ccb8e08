package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/yolo7d/yolo7d/publish"
)

// handleCommand executes a validated command from <prefix>/cmd/<name>; its
// result or error is published on <prefix>/cmd/result by the publisher.
func (a *Agent) handleCommand(ctx context.Context, cmd publish.Command) (any, error) {
	switch cmd.Name {
	case "reload":
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := a.Reload(ctx); err != nil {
			return nil, err
		}
		a.mu.Lock()
		n := len(a.pipes)
		a.mu.Unlock()
		return map[string]any{"cameras": n}, nil
	case "snapshot":
		a.mu.Lock()
		p, ok := a.pipes[cmd.Camera]
		a.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("camera %q is not running", cmd.Camera)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := p.snapshot(ctx)
		if err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", cmd.Camera, err)
		}
		return map[string]any{"camera": cmd.Camera, "frame": r.frame, "bytes": r.bytes,
			"topic": a.topics.Snapshot(cmd.Camera)}, nil
	case publish.CmdFinetune:
		return a.handleFinetune(cmd)
	case publish.CmdRollback:
		return a.rollback(ctx)
	case publish.CmdCapture:
		return a.handleCapture(ctx, cmd)
	default:
		return nil, fmt.Errorf("unknown command %q", cmd.Name)
	}
}
