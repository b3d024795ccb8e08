package publish

import "sync"

// message is one QoS 0 message waiting in memory.
type message struct {
	topic   string
	retain  bool
	payload []byte
}

// memQueue is the bounded in-memory FIFO of QoS 0 messages. When it is
// full, push drops the oldest message.
type memQueue struct {
	mu   sync.Mutex
	buf  []message // ring
	head int
	n    int
}

func newMemQueue(size int) *memQueue {
	return &memQueue{buf: make([]message, size)}
}

// push appends m and reports whether the oldest message was dropped to make
// room.
func (q *memQueue) push(m message) (dropped bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == len(q.buf) {
		q.buf[q.head] = message{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		dropped = true
	}
	q.buf[(q.head+q.n)%len(q.buf)] = m
	q.n++
	return dropped
}

// pop removes and returns the oldest message.
func (q *memQueue) pop() (message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return message{}, false
	}
	m := q.buf[q.head]
	q.buf[q.head] = message{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return m, true
}

// len returns the number of queued messages.
func (q *memQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
