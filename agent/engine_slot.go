package agent

import (
	"context"
	"errors"
	"sync"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/infer"
)

// engineSlot holds the engine all cameras share and lets it be replaced
// while they run (hot swap): a Detect in flight finishes on the engine it
// started with, and the old engine is closed only once no call uses it.
type engineSlot struct {
	mu  sync.RWMutex
	eng infer.Engine
}

var errNoEngine = errors.New("no model loaded")

// Detect runs the current engine on frame.
func (s *engineSlot) Detect(ctx context.Context, frame gocv.Mat) (infer.Result, infer.ModelInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.eng == nil {
		return infer.Result{}, infer.ModelInfo{}, errNoEngine
	}
	res, err := s.eng.Detect(ctx, frame)
	return res, s.eng.Info(), err
}

// Info describes the current model (zero when none is loaded).
func (s *engineSlot) Info() infer.ModelInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.eng == nil {
		return infer.ModelInfo{}
	}
	return s.eng.Info()
}

// Swap installs next and closes the engine it replaces once no Detect call
// uses it any more.
func (s *engineSlot) Swap(next infer.Engine) error {
	s.mu.Lock()
	old := s.eng
	s.eng = next
	s.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// Close closes the current engine.
func (s *engineSlot) Close() error { return s.Swap(nil) }
