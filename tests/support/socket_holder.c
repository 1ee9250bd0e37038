/*
 * socket_holder: holds an AF_UNIX datagram socket the way systemd's socket activation does
 * and runs a service on it, restarting it whenever it exits (Restart=always).
 *
 *   socket_holder SOCKET_PATH COMMAND [ARG...]
 *
 * The socket is bound once, with SO_PASSCRED, and outlives every run of COMMAND: each run
 * gets it as descriptor 3 with LISTEN_FDS=1, LISTEN_PID=<its pid>, LISTEN_FDNAMES=events.
 * Prints "holder: started PID" and "holder: exited PID STATUS" lines. SIGTERM stops the
 * current run with SIGTERM, waits for it, removes the socket file and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

static int bind_socket(const char *path)
{
	struct sockaddr_un addr;
	int fd, on = 1;

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "holder: socket path too long\n");
		return -1;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) < 0 ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(path, 0660) < 0) {
		fprintf(stderr, "holder: cannot bind %s: %s\n", path, strerror(errno));
		return -1;
	}
	return fd;
}

static void run_child(int fd, char **argv)
{
	char pid[16];

	if (fd != 3) {
		dup2(fd, 3);
		close(fd);
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_FDS", "1", 1);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDNAMES", "events", 1);
	execvp(argv[0], argv);
	fprintf(stderr, "holder: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	int fd;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SOCKET_PATH COMMAND [ARG...]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	fd = bind_socket(argv[1]);
	if (fd < 0)
		return 1;
	printf("holder: holding %s\n", argv[1]);
	while (!stopping) {
		int status = 0;
		pid_t child = fork();

		if (child < 0) {
			fprintf(stderr, "holder: fork: %s\n", strerror(errno));
			return 1;
		}
		if (child == 0)
			run_child(fd, argv + 2);
		printf("holder: started %d\n", (int)child);
		while (waitpid(child, &status, 0) < 0) {
			if (errno != EINTR)
				break;
			if (stopping)
				kill(child, SIGTERM);
		}
		printf("holder: exited %d %d\n", (int)child, status);
		if (!stopping)
			nanosleep(&pause, NULL);
	}
	close(fd);
	unlink(argv[1]);
	return 0;
}
