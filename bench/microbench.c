/* microbench.c — `make microbench`: parser bytes/s and router ns/lookup.
 * Each mb_*.c file provides one bench_* function declared here. */
#include <stdio.h>

int bench_parser(void);
int bench_router(void);

int main(void)
{
    int rc = 0;
    rc |= bench_parser();
    rc |= bench_router();
    return rc;
}
