package publish

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// seqStore hands out per-topic sequence numbers that keep increasing across
// restarts, even after a SIGKILL or a power loss. It persists a reservation,
// not every number: when a topic's numbers pass its reserved ceiling, a new
// ceiling seqBlock higher is written (and fsynced) before the number is
// used, and after a restart numbers resume above the saved ceiling. A
// restart therefore leaves a gap of up to seqBlock in each topic's sequence.
type seqStore struct {
	path  string
	block uint64
	log   *slog.Logger

	mu       sync.Mutex
	last     map[string]uint64 // last number handed out
	reserved map[string]uint64 // saved ceiling
	failed   bool              // the last save failed (logged once)
}

// seqBlock is the reservation step of seqStore.
const seqBlock = 1024

// seqFile is the on-disk form of seqStore.
type seqFile struct {
	V        int               `json:"v"`
	Reserved map[string]uint64 `json:"reserved"`
}

// openSeqStore loads the ceilings saved in path. A missing file starts every
// topic at 1; a damaged one is logged and also starts at 1 (consumers then
// see the sequence restart, which they can tell by ts).
func openSeqStore(path string, log *slog.Logger) (*seqStore, error) {
	s := &seqStore{path: path, block: seqBlock, log: log, last: map[string]uint64{}, reserved: map[string]uint64{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("sequence numbers: %w", err)
	}
	var f seqFile
	if err := json.Unmarshal(b, &f); err != nil {
		log.Error("sequence numbers: file damaged, sequences restart", "file", path, "err", err)
		return s, nil
	}
	for t, n := range f.Reserved {
		s.last[t] = n
		s.reserved[t] = n
	}
	return s, nil
}

// next returns the next sequence number of topic (the first is 1).
func (s *seqStore) next(topic string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.last[topic] + 1
	if n > s.reserved[topic] {
		s.reserved[topic] = n + s.block - 1
		s.save()
	}
	s.last[topic] = n
	return n
}

// save writes the ceilings. Called with s.mu held. A failure is logged
// (once until a save succeeds) and otherwise ignored: numbers stay
// increasing within this run.
func (s *seqStore) save() {
	b, err := json.Marshal(seqFile{V: 1, Reserved: s.reserved})
	if err == nil {
		err = writeFileAtomic(s.path, b, true)
	}
	if err != nil {
		if !s.failed {
			s.log.Error("sequence numbers: cannot save; they may repeat after a restart", "file", s.path, "err", err)
		}
		s.failed = true
		return
	}
	s.failed = false
}
