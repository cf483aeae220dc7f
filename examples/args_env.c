/* args_env: prints its argument vector and every DEMO_* environment variable.
 * Checks that argv and envp reach the program exactly (empty and spaced
 * arguments included) through the initial stack. */
#include <stdio.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv)
{
	printf("argc=%d\n", argc);
	for (int i = 1; i < argc; i++)
		printf("argv[%d]=\"%s\"\n", i, argv[i]);
	for (char **e = environ; *e; e++)
		if (!strncmp(*e, "DEMO_", 5))
			printf("env %s\n", *e);
	return 0;
}
