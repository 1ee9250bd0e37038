/*
 * Sends each argument after the socket path as one datagram to an AF_UNIX SOCK_DGRAM
 * socket, then exits 0; on the first failure it names the error on stderr and exits 1.
 *
 *   send_datagram SOCKET_PATH MESSAGE...
 *
 * Tests run it under another uid (setpriv --reuid ...) to see what the collector does with
 * a sender it does not trust; a native program needs neither Deno's cache nor a home
 * directory that uid could read. Sends block, so a full kernel queue delays rather than
 * fails a test.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s SOCKET_PATH MESSAGE...\n", argv[0]);
		return 2;
	}
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	if (strlen(argv[1]) >= sizeof(address.sun_path)) {
		fprintf(stderr, "%s: socket path too long\n", argv[0]);
		return 2;
	}
	strcpy(address.sun_path, argv[1]);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0) {
		fprintf(stderr, "%s: socket: %s\n", argv[0], strerror(errno));
		return 1;
	}
	for (int i = 2; i < argc; i++) {
		if (sendto(fd, argv[i], strlen(argv[i]), 0, (struct sockaddr *)&address,
			   sizeof(address)) < 0) {
			fprintf(stderr, "%s: send to %s: %s\n", argv[0], argv[1], strerror(errno));
			return 1;
		}
	}
	close(fd);
	return 0;
}
