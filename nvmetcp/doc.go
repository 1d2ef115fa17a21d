// Package nvmetcp is lunbridge's NVMe over TCP host (NVMe/TCP transport
// 1.0, NVMe over Fabrics 1.1): it connects an admin queue and several I/O
// queues (one TCP connection each) to one controller of an NVM subsystem,
// enables the controller through Fabrics Property Get/Set, identifies it
// and its namespaces, keeps the association alive (Keep Alive) and runs
// Read, Write (in-capsule or through R2T/H2CData), Flush, Write Zeroes and
// Dataset Management on a namespace. A Namespace implements
// blockdev.Device, so every bridge (NBD, FUSE, copy, multipath, mirror)
// works on it as on an iSCSI LUN.
//
// Asymmetric Namespace Access: Controller.ANALog reads the ANA log page,
// Namespace.ANAState the state of the namespace's group on this
// controller, IsANAStatus recognises the ANA path statuses; a controller
// that sends ANA change notices gets an Asynchronous Event Request kept
// outstanding, and ANAChanged signals each notice. With
// Config.NoReconnect a failed association stays down (Done is closed)
// so that multipath, which owns several associations, decides what
// happens next; Abort ends one with TCP resets.
//
// No ghost writes: without NoReconnect a failed association is
// re-established by the next command, but write-class commands (all
// but Read) wait until FenceAfter(reset, KATO), when the old
// association can hold no command any more (fence.go); reads go at
// once. multipath follows the same rule. Controller.Stats counts
// reconnects and fences.
//
// It owns Controller, Namespace, the per-connection queue and its read
// loop, and discovery (the discovery log page). It imports the pure codec
// nvmetcp/pdu, blockdev and logrus; it must not import initiator or
// anything above it (multipath, the bridges, cmd).
//
// Concurrency: one read loop per queue dispatches C2HData, R2T and
// CapsuleResp by command identifier (CID) to the waiting request and sends
// H2CData for R2Ts itself. Submitters write their capsule under the
// queue's write mutex (q.wmu); the request table lock (q.mu) is never held
// while taking another. Only the read loop completes a request, or its exit,
// which fails every outstanding request with the connection's error. A
// waiter that gives up (context, command timeout) sends an Abort on the
// admin queue and waits a grace period (at most 5 s) for the command to
// end; when it does not (Linux nvmet never aborts), the connection is
// closed and the waiter waits for the loop to exit, so a caller's buffer
// is never written after the call returns. Controller.mu serialises reconnection; lock order
// Controller.mu, then q.wmu, then q.mu.
package nvmetcp
