package presence

// Tracked reports whether the service holds state for userID (online or in
// its grace period), so tests can check memory follows online users.
func (s *Service) Tracked(userID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[userID] != nil
}

// Pending reports whether userID has no live session and waits for its grace
// to end.
func (s *Service) Pending(userID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[userID]
	return u != nil && !u.offlineAt.IsZero()
}
